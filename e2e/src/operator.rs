//! The operator under test as a separate process, with its own kubeconfig (the RBAC the project
//! grants) and its log captured to a file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::cluster::{die_with_parent, terminate};
use crate::workspace_root;

/// The `clinic-operator` binary: `$CLINIC_OPERATOR_BIN`, else built with cargo.
pub fn binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("CLINIC_OPERATOR_BIN") {
        return Ok(PathBuf::from(path));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--quiet", "-p", "clinic-operator", "--bin", "clinic-operator"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build -p clinic-operator failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    Ok(target.join("debug").join("clinic-operator"))
}

/// Spawns processes from one long-lived thread: PR_SET_PDEATHSIG fires when the *thread* that
/// spawned a child exits, so a restart from a short-lived test thread must not own the child.
struct Spawner {
    requests: std::sync::mpsc::Sender<(Command, std::sync::mpsc::Sender<std::io::Result<Child>>)>,
}

impl Spawner {
    fn new() -> Result<Spawner> {
        let (tx, rx) =
            std::sync::mpsc::channel::<(Command, std::sync::mpsc::Sender<std::io::Result<Child>>)>();
        std::thread::Builder::new().name("operator-spawner".into()).spawn(move || {
            for (mut command, reply) in rx {
                let _ = reply.send(command.spawn());
            }
        })?;
        Ok(Spawner { requests: tx })
    }

    fn spawn(&self, command: Command) -> Result<Child> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.requests.send((command, tx)).map_err(|_| anyhow::anyhow!("spawner thread gone"))?;
        Ok(rx.recv()??)
    }
}

/// A running operator.
pub struct OperatorProcess {
    spawner: Spawner,
    child: Option<Child>,
    pub log: PathBuf,
    binary: PathBuf,
    kubeconfig: PathBuf,
    pub metrics_port: u16,
    starts: usize,
    extra_args: Vec<String>,
}

impl OperatorProcess {
    pub fn start(binary: &Path, kubeconfig: &Path, log_dir: &Path) -> Result<OperatorProcess> {
        Self::start_with(binary, kubeconfig, log_dir, &[])
    }

    /// Starts the operator with extra `run` arguments (e.g. `--watch-namespaces`).
    pub fn start_with(
        binary: &Path,
        kubeconfig: &Path,
        log_dir: &Path,
        extra_args: &[&str],
    ) -> Result<OperatorProcess> {
        let metrics_port = crate::cluster::free_port()?;
        let mut op = OperatorProcess {
            spawner: Spawner::new()?,
            child: None,
            log: log_dir.join("operator.log"),
            binary: binary.to_path_buf(),
            kubeconfig: kubeconfig.to_path_buf(),
            metrics_port,
            starts: 0,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        };
        op.spawn()?;
        Ok(op)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = File::options().create(true).append(true).open(&self.log)?;
        let mut command = Command::new(&self.binary);
        command
            .args([
                "run",
                "--log-format",
                "json",
                "--metrics-addr",
                &format!("127.0.0.1:{}", self.metrics_port),
            ])
            .args(&self.extra_args)
            .args(policy_args(&self.extra_args, self.log.parent().unwrap_or(Path::new(".")))?)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info,clinic_operator=debug,kube=warn")
            .env("POD_NAME", format!("e2e-operator-{}", self.starts))
            // The namespace the chart installs it in: its ledger goes there.
            .env("POD_NAMESPACE", "clinic-system")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut command);
        self.child = Some(self.spawner.spawn(command).context("starting clinic-operator")?);
        self.starts += 1;
        Ok(())
    }

    /// SIGKILL: no chance to finish anything, as when a node dies.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// Process id of the running operator (for /proc readings in benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The operator's captured output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Body of `/metrics`, `/readyz` or `/healthz`.
    pub fn http_get(&self, path: &str) -> Result<(u16, String)> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Ok((code, body))
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }
}

/// The platform policy of the examples (`examples/platform-values.yaml`).
pub fn platform_values() -> PathBuf {
    workspace_root().join("examples/platform-values.yaml")
}

/// The policy the suite's operators run under unless a scenario names its own `--policy`: the
/// examples' policy, plus the names scenarios point at on purpose (a Velero namespace that does
/// not exist, a second ClusterIssuer, Grafana and Prometheus in namespaces of their own, Traefik's
/// namespace as an Ingress controller's).
/// As YAML (the operator's parser reads it; this crate does not link the operator).
pub fn suite_policy() -> Result<String> {
    let values: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(platform_values())?)?;
    let mut policy = values.get("policy").cloned().context("examples/platform-values.yaml has no policy")?;
    for (key, name) in [
        ("veleroNamespaces", "velero-does-not-exist"),
        ("clusterIssuers", "letsencrypt"),
        ("dashboardNamespaces", "grafana"),
        ("prometheusNamespaces", "observability"),
        // The real node's Traefik is the Ingress controller of its Ingress scenario too.
        ("ingressControllerNamespaces", "gateway-system"),
    ] {
        let list = policy
            .get_mut(key)
            .and_then(|l| l.as_sequence_mut())
            .with_context(|| format!("examples/platform-values.yaml: policy.{key} is not a list"))?;
        list.push(name.into());
    }
    Ok(serde_yaml::to_string(&policy)?)
}

/// `--policy <file>` with [`suite_policy`] written next to the log, unless the scenario gave one.
fn policy_args(extra_args: &[String], log_dir: &Path) -> Result<Vec<String>> {
    if extra_args.iter().any(|a| a == "--policy" || a.starts_with("--policy=")) {
        return Ok(Vec::new());
    }
    let path = log_dir.join("policy.yaml");
    std::fs::write(&path, suite_policy()?)?;
    Ok(vec!["--policy".into(), path.display().to_string()])
}
