//! Fleet benchmark: for each N, a fresh local control plane (kube-apiserver, controller-manager,
//! scheduler, etcd, kwok), the operator (release build, the chart's RBAC), N ClinicPlatforms each
//! in its own namespace, and measurements:
//!
//! - time until all are Ready, and the convergence curve (Ready count every second);
//! - API requests by verb and resource from the API server's `apiserver_request_total`, and the
//!   operator's own writes by verb; writes per converged clinic;
//! - writes during a forced full resync of the converged fleet (the operator restarted: every
//!   clinic reconciled again from fresh caches);
//! - operator peak RSS and CPU seconds; reconcile latency p50/p99 from its histogram;
//! - CPU seconds of every process (control plane, operator, this bench) and of the machine, and
//!   the watch events the API server sent, by resource: where the time of a saturated machine
//!   went.
//!
//! Before the operator, at each N, the floor: the same children (what `render` prints) written
//! by server-side apply with no operator, as the operator's ServiceAccount, on a control plane
//! started the same way, waited on until every clinic's workloads are ready
//! (`<out>/floor-<N>.json`, `floor-curve-<N>.csv`). Both runs apply the namespaces by kubectl,
//! then their objects (the children, or the ClinicPlatforms) with the same writer, and count
//! readiness from watches, so that they differ only in what is written.
//!
//! Results go to `<out>/fleet-<N>.json` and `<out>/curve-<N>.csv`. Bounded: each N stops at its
//! timeout. `make bench` runs it; not part of `make test`.
// The result document is one `json!` literal, deeper than the macro's default recursion.
#![recursion_limit = "256"]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clinic_operator_e2e::cluster::{self, ControlPlane, Options};
use clinic_operator_e2e::operator::{self, OperatorProcess};
use clinic_operator_e2e::workspace_root;
use serde::Deserialize;
use serde_json::{Value, json};

struct Args {
    sizes: Vec<usize>,
    out: PathBuf,
    concurrency: u16,
    timeout: Duration,
    /// Measure the floor (no operator) before the operator at each size.
    floor: bool,
    /// kwok's nice value in both runs (see `Options::kwok_nice`): -5 unless told.
    kwok_nice: i32,
}

fn args() -> Result<Args> {
    let mut args = Args {
        sizes: vec![100, 300, 1000],
        out: workspace_root().join("bench/results"),
        concurrency: 16,
        timeout: Duration::from_secs(900),
        floor: true,
        kwok_nice: -5,
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
            "--no-floor" => args.floor = false,
            "--kwok-nice" => args.kwok_nice = value()?.parse()?,
            "-h" | "--help" => {
                println!(
                    "fleet-bench [--clinics 100,300,1000] [--concurrency 16] [--timeout 900] [--no-floor] [--kwok-nice -5] [--out bench/results]"
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

/// Counters of one `/metrics` reading of the API server.
struct ApiCounters {
    /// Requests by (verb, resource[/subresource]).
    requests: BTreeMap<(String, String), f64>,
    /// What serving the watches cost, by (`events`, `bytes` or `terminated`, resource).
    watches: BTreeMap<(String, String), f64>,
}

impl ApiCounters {
    /// What was counted since `before`.
    fn since(&self, before: &ApiCounters) -> ApiCounters {
        ApiCounters {
            requests: delta(&self.requests, &before.requests),
            watches: delta(&self.watches, &before.watches),
        }
    }
}

fn apiserver_requests(plane: &ControlPlane) -> Result<ApiCounters> {
    let body = plane.kubectl(&["get", "--raw", "/metrics"])?;
    let mut requests = BTreeMap::new();
    for (labels, v) in samples(&body, "apiserver_request_total") {
        let mut resource = labels.get("resource").cloned().unwrap_or_default();
        if let Some(sub) = labels.get("subresource").filter(|s| !s.is_empty()) {
            resource = format!("{resource}/{sub}");
        }
        *requests.entry((labels.get("verb").cloned().unwrap_or_default(), resource)).or_insert(0.0) += v;
    }
    let mut watches = BTreeMap::new();
    for (metric, what) in [
        ("apiserver_watch_events_total", "events"),
        ("apiserver_watch_events_sizes_sum", "bytes"),
        // Watchers the API server closed because they did not take their events in time.
        ("apiserver_terminated_watchers_total", "terminated"),
    ] {
        for (labels, v) in samples(&body, metric) {
            // `resource` since Kubernetes 1.30, `kind` before.
            let kind = labels.get("resource").or_else(|| labels.get("kind")).cloned().unwrap_or_default();
            *watches.entry((what.to_string(), kind)).or_insert(0.0) += v;
        }
    }
    Ok(ApiCounters { requests, watches })
}

/// Watch events and bytes sent, and watchers closed as too slow, by resource, most bytes first.
fn watch_table(watches: &BTreeMap<(String, String), f64>) -> Value {
    let sent =
        |what: &str, kind: &str| watches.get(&(what.to_string(), kind.to_string())).copied().unwrap_or(0.0);
    let mut kinds: Vec<(&str, f64, f64)> = watches
        .keys()
        .filter(|(what, _)| what == "events")
        .map(|(_, kind)| (kind.as_str(), sent("events", kind), sent("bytes", kind)))
        .collect();
    kinds.sort_by(|a, b| b.2.total_cmp(&a.2));
    kinds
        .into_iter()
        .map(|(kind, events, bytes)| {
            let terminated = sent("terminated", kind);
            json!({"kind": kind, "events": events, "bytes": bytes, "terminated_watchers": terminated})
        })
        .collect()
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
            | "alertmanagerconfigs"
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

/// The share of reconciles that took at most `le` seconds (a bucket bound of the histogram).
fn share_within(buckets: &[(f64, f64)], le: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    let within = buckets.iter().find(|(bound, _)| (*bound - le).abs() < 1e-9)?.1;
    (total > 0.0).then(|| within / total)
}

/// The histogram's cumulative buckets as `[le, count]` pairs (`+Inf` last, as `null`).
fn bucket_table(buckets: &[(f64, f64)]) -> Value {
    buckets.iter().map(|(le, count)| json!([le.is_finite().then_some(*le), count])).collect()
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

/// Ready as `kubectl get clinicplatforms` shows it: the Ready condition True.
fn clinic_ready(_kind: &str, o: &kube::api::DynamicObject) -> bool {
    o.data["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn ready_count(seen: &Seen) -> usize {
    seen.lock().unwrap_or_else(|p| p.into_inner()).values().filter(|ready| **ready).count()
}

/// The namespace of clinic `i`, labelled for Pod Security as the docs ask.
fn namespace_yaml(i: usize) -> String {
    format!(
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: clinic-{i:04}\n  labels:\n    pod-security.kubernetes.io/enforce: restricted\n    pod-security.kubernetes.io/audit: restricted\n    pod-security.kubernetes.io/warn: restricted\n"
    )
}

/// The ClinicPlatform of clinic `i`: the defaults.
fn clinic_yaml(i: usize) -> String {
    format!(
        "---\napiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata:\n  name: clinic-{i:04}\n  namespace: clinic-{i:04}\nspec: {{}}\n"
    )
}

/// Applies `document(i)` for every clinic, one kubectl apply per 50 clinics, as a GitOps sync
/// would.
fn apply_in_batches(plane: &ControlPlane, n: usize, document: impl Fn(usize) -> String) -> Result<()> {
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let yaml: String = chunk.iter().map(|&i| document(i)).collect();
        plane.apply_yaml(&yaml)?;
    }
    Ok(())
}

/// The ClinicPlatforms of clinics `0..n`, as objects for [`write_all`].
fn clinic_objects(n: usize) -> Result<Vec<kube::api::DynamicObject>> {
    (0..n).map(|i| Ok(serde_yaml::from_str(&clinic_yaml(i))?)).collect()
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

/// A fresh control plane sized for `n` clinics, with every CRD a clinic's children need. The
/// floor and the operator each get one, started the same way.
fn start_plane(n: usize, dir: &Path, args: &Args) -> Result<(ControlPlane, usize)> {
    // ~6 pods per clinic (MariaDB, backend, 2 frontend, 2 gateway), 500 pods per fake node.
    let nodes = (n * 7).div_ceil(500).max(2);
    let options = Options {
        nodes,
        pods_per_node: 500,
        controller_qps: Some(300),
        kwok_nice: Some(args.kwok_nice),
        ..Options::default()
    };
    let plane = ControlPlane::start_with(&cluster::binaries()?, dir, options)?;
    plane.install_crds(&cluster::upstream_crds()?)?;
    plane.install_crds(&[workspace_root().join("crds/clinicplatform.yaml")])?;
    plane.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: velero\n")?;
    Ok((plane, nodes))
}

fn run_one(n: usize, args: &Args, bin: &Path) -> Result<Value> {
    eprintln!("== {n} clinics through the operator");
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("clinic-bench-{}-{n}", std::process::id()));
    let (plane, nodes) = start_plane(n, &dir, args)?;
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

    let (runtime, client) = observer(&plane)?;
    let seen = Seen::default();
    watch_all(&runtime, &client, clinic_platform_resource(), &seen, clinic_ready);
    let objects = clinic_objects(n)?;
    let before = apiserver_requests(&plane)?;
    let cpu_before = cpu_by_component(&plane, op.pid());
    // As the floor: namespaces first, then the objects (here the ClinicPlatforms) by the same
    // writer, so that the two runs differ only in what is written.
    let t0 = Instant::now();
    apply_in_batches(&plane, n, namespace_yaml)?;
    let writer = {
        let handle = runtime.handle().clone();
        std::thread::spawn(move || handle.block_on(write_all(client, objects, "fleet-bench")))
    };
    let mut created_in = None;
    let mut curve = vec![(0.0, 0usize)];
    let mut peak_rss = 0.0f64;
    let mut converged_in = None;
    while t0.elapsed() < args.timeout {
        std::thread::sleep(Duration::from_secs(1));
        if created_in.is_none() && writer.is_finished() {
            created_in = Some(t0.elapsed().as_secs_f64());
        }
        let ready = ready_count(&seen);
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
    writer.join().map_err(|_| anyhow::anyhow!("ClinicPlatform writer panicked"))??;
    let cpu = cpu_spent(&cpu_by_component(&plane, op.pid()), &cpu_before);
    // Let the last status writes and events land before counting.
    std::thread::sleep(Duration::from_secs(3));
    let after = apiserver_requests(&plane)?;
    let converged_counts = after.since(&before);
    let converge_requests = &converged_counts.requests;
    let om = operator_metrics(&op)?;
    let (rss_now, hwm, operator_cpu) = op.pid().and_then(process_usage).unwrap_or_default();
    let converge_ops = om.writes.values().sum::<f64>();
    eprintln!(
        "   converged: {} in {:.1}s; operator writes {converge_ops:.0} ({:.1}/clinic); peak RSS {:.1} MiB; CPU {operator_cpu:.1}s",
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
    // Where the resync's peak memory is made: while the restart lists every kind (until
    // /readyz), or in the passes after it.
    let resync_ready_in = t1.elapsed().as_secs_f64();
    let (_, resync_hwm_at_ready, _) = op.pid().and_then(process_usage).unwrap_or_default();
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
    let resync_requests = apiserver_requests(&plane)?.since(&before_resync).requests;
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
        "kwok_nice": args.kwok_nice,
        "operator_concurrency": args.concurrency,
        "created_in_seconds": created_in,
        "converged": converged_in.is_some(),
        "converged_in_seconds": converged_in,
        "children_per_clinic": children,
        "operator_writes": om.writes,
        "operator_writes_total": converge_ops,
        "operator_writes_per_clinic": converge_ops / n as f64,
        "operator_writes_while_settling": settle_writes,
        "api_writes_on_operator_resources": writes_of(converge_requests, operator_resource),
        "api_writes_on_operator_resources_per_clinic": writes_of(converge_requests, operator_resource) / n as f64,
        "api_writes_all": writes_of(converge_requests, |_| true),
        "api_requests": table(converge_requests),
        "watch_events_sent": watch_table(&converged_counts.watches),
        "reconciles": om.reconciles,
        "reconcile_errors": om.errors,
        "reconcile_p50_seconds": quantile(&om.buckets, 0.5),
        "reconcile_p99_seconds": quantile(&om.buckets, 0.99),
        "reconcile_share_within_50ms": share_within(&om.buckets, 0.05),
        "reconcile_buckets": bucket_table(&om.buckets),
        "operator_peak_rss_mib": hwm.max(peak_rss),
        "operator_rss_after_mib": rss_now,
        "operator_cpu_seconds": operator_cpu,
        "cpu_seconds": cpu,
        "resync": {
            "reconciles": resync_reconciles,
            "seconds": resync_in,
            "operator_writes": resync.writes,
            "operator_writes_total": resync_writes,
            "api_writes_on_operator_resources": writes_of(&resync_requests, operator_resource),
            "api_requests": table(&resync_requests),
            "reconcile_p50_seconds": quantile(&resync.buckets, 0.5),
            "reconcile_p99_seconds": quantile(&resync.buckets, 0.99),
            "reconcile_share_within_50ms": share_within(&resync.buckets, 0.05),
            "reconcile_buckets": bucket_table(&resync.buckets),
            "operator_peak_rss_mib": resync_hwm,
            "ready_after_seconds": resync_ready_in,
            "operator_peak_rss_mib_when_ready": resync_hwm_at_ready,
            "operator_cpu_seconds": resync_cpu,
        },
    });
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join(format!("fleet-{n}.json")), serde_json::to_string_pretty(&result)?)?;
    write_curve(&args.out.join(format!("curve-{n}.csv")), &curve)?;
    // The watches end with their runtime, before the API server they watch.
    drop(runtime);
    drop(op);
    drop(plane);
    Ok(result)
}

/// The children `render` prints for clinics `0..n`, as the operator would declare them: under
/// the policy the bench's operator runs with (its alert routing adds an AlertmanagerConfig).
fn rendered_children(n: usize) -> Result<Vec<kube::api::DynamicObject>> {
    let input: String = (0..n).map(clinic_yaml).collect();
    let policy = std::env::temp_dir().join(format!("fleet-bench-policy-{}.yaml", std::process::id()));
    std::fs::write(&policy, operator::suite_policy()?)?;
    let rendered = render(&operator::binary()?, &policy, input);
    let _ = std::fs::remove_file(&policy);
    rendered
}

fn render(binary: &Path, policy: &Path, input: String) -> Result<Vec<kube::api::DynamicObject>> {
    let mut child = std::process::Command::new(binary)
        .arg("render")
        .arg("--policy")
        .arg(policy)
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running clinic-operator render")?;
    let mut stdin = child.stdin.take().context("render's stdin")?;
    // Written from a thread: render's output may fill its pipe before the input is all read.
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(input.as_bytes())
    });
    let out = child.wait_with_output()?;
    writer.join().map_err(|_| anyhow::anyhow!("render input thread"))??;
    if !out.status.success() {
        bail!("render failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_slice(&out.stdout) {
        let value = serde_yaml::Value::deserialize(document)?;
        if !value.is_null() {
            objects.push(serde_yaml::from_value(value)?);
        }
    }
    Ok(objects)
}

/// Whether each watched object is ready, by namespace and kind/name, as watches report it: the
/// API server sends changes only, as it does to the operator, where a poll would list the whole
/// fleet each time (20 to 30 s a list at 1,000 clinics) and load the machine it measures.
type Seen = std::sync::Arc<std::sync::Mutex<BTreeMap<(String, String), bool>>>;

/// Ready as the operator judges a workload: every wanted replica ready (available, for a
/// Deployment) and updated, the current generation observed.
fn workload_ready(kind: &str, o: &kube::api::DynamicObject) -> bool {
    let number = |v: &Value| v.as_i64().unwrap_or(0);
    let (spec, status) = (&o.data["spec"], &o.data["status"]);
    let want = spec["replicas"].as_i64().unwrap_or(1).max(1);
    let ready = if kind == "Deployment" {
        number(&status["availableReplicas"])
    } else {
        number(&status["readyReplicas"])
    };
    ready >= want
        && number(&status["updatedReplicas"]) >= want
        && number(&status["observedGeneration"]) >= o.metadata.generation.unwrap_or(0)
}

/// Watches every object of `resource` into `seen`, judged by `ready`, until the runtime stops.
/// A watch that fails is retried with backoff, as the operator's are, rather than freezing the
/// curve.
fn watch_all(
    runtime: &tokio::runtime::Runtime,
    client: &kube::Client,
    resource: kube::api::ApiResource,
    seen: &Seen,
    ready: fn(&str, &kube::api::DynamicObject) -> bool,
) {
    use futures::StreamExt;
    use kube::api::{Api, DynamicObject};
    use kube::runtime::WatchStreamExt;
    use kube::runtime::watcher::{self, Event};
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let seen = seen.clone();
    let kind = resource.kind;
    let key = {
        let kind = kind.clone();
        move |o: &DynamicObject| {
            let name = o.metadata.name.as_deref().unwrap_or_default();
            (o.metadata.namespace.clone().unwrap_or_default(), format!("{kind}/{name}"))
        }
    };
    let events = watcher::watcher(api, watcher::Config::default()).default_backoff();
    runtime.spawn(events.for_each(move |event| {
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Ok(Event::Apply(o) | Event::InitApply(o)) => {
                seen.insert(key(&o), ready(&kind, &o));
            }
            Ok(Event::Delete(o)) => {
                seen.remove(&key(&o));
            }
            Ok(Event::Init | Event::InitDone) | Err(_) => {}
        }
        futures::future::ready(())
    }));
}

fn clinic_platform_resource() -> kube::api::ApiResource {
    let gvk = kube::api::GroupVersionKind::gvk("clinic.audioprothese.fr", "v1alpha1", "ClinicPlatform");
    kube::api::ApiResource::from_gvk(&gvk)
}

/// A one-thread runtime and an admin client of `plane`: what the benchmark watches with in both
/// runs, and writes the ClinicPlatforms with (as a platform team would).
fn observer(plane: &ControlPlane) -> Result<(tokio::runtime::Runtime, kube::Client)> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let client = client_of(&runtime, &plane.kubeconfig)?;
    Ok((runtime, client))
}

fn client_of(runtime: &tokio::runtime::Runtime, kubeconfig: &Path) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    runtime.block_on(async {
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await?;
        anyhow::Ok(kube::Client::try_from(config)?)
    })
}

/// CPU seconds used so far by each component of `plane`, the operator (when running), this
/// benchmark (its watches, writer and the volume provisioner) with the kubectl it ran, and the
/// whole machine (`/proc/stat`, all but idle and iowait): where a run's time went.
fn cpu_by_component(plane: &ControlPlane, operator: Option<u32>) -> BTreeMap<String, f64> {
    let mut cpu: BTreeMap<String, f64> = plane
        .component_pids()
        .into_iter()
        .filter_map(|(name, pid)| Some((name, process_usage(pid)?.2)))
        .collect();
    if let Some(seconds) = operator.and_then(process_usage).map(|(_, _, cpu)| cpu) {
        cpu.insert("clinic-operator".into(), seconds);
    }
    let bench = process_usage(std::process::id()).map(|(_, _, cpu)| cpu).unwrap_or(0.0);
    cpu.insert("fleet-bench and its kubectl".into(), bench + reaped_children_cpu());
    if let Some(busy) = machine_busy_seconds() {
        cpu.insert("machine".into(), busy);
    }
    cpu
}

fn cpu_spent(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> Value {
    after.iter().map(|(k, v)| (k.clone(), json!(v - before.get(k).copied().unwrap_or(0.0)))).collect()
}

/// CPU seconds of the children this process waited for (its kubectl and render runs).
fn reaped_children_cpu() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Busy CPU seconds of the whole machine since boot: the first line of `/proc/stat`.
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> =
        stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| fields.get(i)).sum();
    Some(busy / clock_ticks())
}

/// Namespaces with at least `workloads` workloads, all ready.
fn namespaces_with_ready_workloads(readiness: &Seen, workloads: usize) -> usize {
    let seen = readiness.lock().unwrap_or_else(|p| p.into_inner());
    let mut by_namespace: BTreeMap<&str, (usize, bool)> = BTreeMap::new();
    for ((namespace, _), ready) in seen.iter() {
        let entry = by_namespace.entry(namespace).or_insert((0, true));
        entry.0 += 1;
        entry.1 &= *ready;
    }
    by_namespace.values().filter(|(count, ok)| *count >= workloads && *ok).count()
}

/// The floor: the same children written by server-side apply with no operator, 16 requests in
/// flight (the operator's concurrency), on a control plane started as the operator's is, and
/// waited on until every clinic's workloads are ready.
fn run_floor(n: usize, args: &Args) -> Result<Value> {
    eprintln!("== floor: {n} clinics' children by server-side apply, no operator");
    let dir = std::env::temp_dir().join(format!("clinic-bench-floor-{}-{n}", std::process::id()));
    let (plane, nodes) = start_plane(n, &dir, args)?;
    let objects = rendered_children(n)?;
    let children = objects.len() / n.max(1);
    let workloads = objects
        .iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| matches!(t.kind.as_str(), "StatefulSet" | "Deployment")))
        .count()
        / n.max(1);
    let (runtime, client) = observer(&plane)?;
    let readiness = Seen::default();
    for resource in [
        kube::api::ApiResource::erase::<k8s_openapi::api::apps::v1::StatefulSet>(&()),
        kube::api::ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
    ] {
        watch_all(&runtime, &client, resource, &readiness, workload_ready);
    }
    // The floor writes as the operator does: its ServiceAccount and the chart's RBAC. An admin
    // (`system:masters`) is exempt from API Priority and Fairness, so its writes would go ahead
    // of the controllers' while the operator's wait their turn behind them.
    let writer_client = client_of(&runtime, &plane.operator_kubeconfig()?)?;
    let before = apiserver_requests(&plane)?;
    let cpu_before = cpu_by_component(&plane, None);
    let t0 = Instant::now();
    apply_in_batches(&plane, n, namespace_yaml)?;
    let writer = {
        let handle = runtime.handle().clone();
        std::thread::spawn(move || handle.block_on(write_all(writer_client, objects, "floor")))
    };
    let mut curve = vec![(0.0, 0usize)];
    let mut converged_in = None;
    let mut written_in = None;
    while t0.elapsed() < args.timeout {
        std::thread::sleep(Duration::from_secs(1));
        if written_in.is_none() && writer.is_finished() {
            written_in = Some(t0.elapsed().as_secs_f64());
        }
        let ready = namespaces_with_ready_workloads(&readiness, workloads);
        let t = t0.elapsed().as_secs_f64();
        curve.push((t, ready));
        if ready == n {
            converged_in = Some(t);
            break;
        }
        if curve.len() % 15 == 0 {
            eprintln!("   {t:>5.0}s  {ready}/{n} clinics' workloads ready");
        }
    }
    let writes = writer.join().map_err(|_| anyhow::anyhow!("floor writer panicked"))??;
    let cpu = cpu_spent(&cpu_by_component(&plane, None), &cpu_before);
    std::thread::sleep(Duration::from_secs(3));
    let counts = apiserver_requests(&plane)?.since(&before);
    let requests = &counts.requests;
    eprintln!(
        "   floor: {} in {:.1}s ({writes} applies, written in {:.1}s)",
        if converged_in.is_some() { "all ready" } else { "NOT all ready" },
        converged_in.unwrap_or(f64::NAN),
        written_in.unwrap_or(f64::NAN)
    );
    let result = json!({
        "clinics": n,
        "fake_nodes": nodes,
        "kwok_nice": args.kwok_nice,
        "children_per_clinic": children,
        "concurrency": FLOOR_CONCURRENCY,
        "converged": converged_in.is_some(),
        "converged_in_seconds": converged_in,
        "written_in_seconds": written_in,
        "applies": writes,
        "cpu_seconds": cpu,
        "api_writes_on_operator_resources": writes_of(requests, operator_resource),
        "api_writes_all": writes_of(requests, |_| true),
        "api_requests": table(requests),
        "watch_events_sent": watch_table(&counts.watches),
    });
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join(format!("floor-{n}.json")), serde_json::to_string_pretty(&result)?)?;
    write_curve(&args.out.join(format!("floor-curve-{n}.csv")), &curve)?;
    // The watches end with their runtime, before the API server they watch.
    drop(runtime);
    drop(plane);
    Ok(result)
}

/// Requests in flight while the floor writes: the operator's default concurrency.
const FLOOR_CONCURRENCY: usize = 16;

/// Server-side applies every object (field manager `manager`), [`FLOOR_CONCURRENCY`] at a time;
/// returns how many were written.
async fn write_all(
    client: kube::Client,
    objects: Vec<kube::api::DynamicObject>,
    manager: &str,
) -> Result<usize> {
    use futures::StreamExt;
    use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
    use kube::core::GroupVersionKind;
    let mut kinds: BTreeMap<(String, String), ApiResource> = BTreeMap::new();
    for o in &objects {
        let types = o.types.clone().context("an object without apiVersion/kind")?;
        if let std::collections::btree_map::Entry::Vacant(slot) = kinds.entry((types.api_version, types.kind))
        {
            let (group, version) = match slot.key().0.split_once('/') {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (String::new(), slot.key().0.clone()),
            };
            let gvk = GroupVersionKind::gvk(&group, &version, &slot.key().1);
            let (resource, _) = kube::discovery::pinned_kind(&client, &gvk).await?;
            slot.insert(resource);
        }
    }
    let params = PatchParams::apply(manager).force();
    let writes = futures::stream::iter(objects.into_iter().map(|o| {
        let types = o.types.clone().unwrap_or_default();
        let resource = kinds[&(types.api_version, types.kind)].clone();
        let (client, params) = (client.clone(), params.clone());
        async move {
            let namespace = o.metadata.namespace.clone().unwrap_or_default();
            let name = o.metadata.name.clone().unwrap_or_default();
            let api: Api<DynamicObject> = Api::namespaced_with(client, &namespace, &resource);
            api.patch(&name, &params, &Patch::Apply(&o)).await.with_context(|| format!("{namespace}/{name}"))
        }
    }))
    .buffer_unordered(FLOOR_CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    writes.into_iter().try_fold(0, |count, w| w.map(|_| count + 1))
}

/// Clinics ready over time, as `seconds,ready` lines.
fn write_curve(path: &Path, curve: &[(f64, usize)]) -> Result<()> {
    let mut csv = String::from("seconds,ready\n");
    for (t, r) in curve {
        let _ = writeln!(csv, "{t:.1},{r}");
    }
    Ok(std::fs::write(path, csv)?)
}

/// Objects `render` prints for a default clinic, the Velero Schedule and the AlertmanagerConfig
/// among them.
fn clinic_operator_children() -> usize {
    rendered_children(1).map(|objects| objects.len()).unwrap_or(0)
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
    let mut floors = Vec::new();
    for &n in &args.sizes {
        if args.floor {
            floors.push(run_floor(n, &args)?);
        }
        results.push(run_one(n, &args, &bin)?);
    }
    let summary = json!({ "machine": machine, "results": results, "floors": floors });
    std::fs::write(args.out.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    eprintln!("results in {}", args.out.display());
    Ok(())
}
