//! A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and kwok (simulated nodes), built from the Kubernetes Go modules by
//! `e2e/cluster/build.sh`. Dropping the [`ControlPlane`] stops every process it started; the
//! processes also die with the thread that started them (PR_SET_PDEATHSIG), so a killed test run
//! leaves nothing behind.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;

use crate::pki::{self, Pki};
use crate::provisioner::Provisioner;
use crate::workspace_root;

/// A running control plane.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
    pub api_port: u16,
    pub pki: Pki,
    etcd_data: PathBuf,
    processes: Vec<(String, Child)>,
    provisioner: Option<Provisioner>,
    keep_dir: bool,
}

/// Number of simulated nodes.
pub const NODES: usize = 2;

/// How big the simulated cluster is and how fast its controllers may talk to the API server.
#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    /// Pods each fake node accepts (CPU and memory are ample).
    pub pods_per_node: u32,
    /// `--kube-api-qps` of the controller-manager and scheduler (upstream default 20 / 50):
    /// raised for fleet benchmarks so that the operator, not the simulated cluster, is measured.
    pub controller_qps: Option<u32>,
    /// Provision volumes as `local` PersistentVolumes in this folder on the real node (they are
    /// mounted for real, and honour `fsGroup`), instead of hostPath volumes nobody mounts.
    pub local_volumes: Option<crate::provisioner::LocalVolumes>,
    /// Run only etcd and the kube-apiserver found in this folder (the floor test: an older API
    /// server): no controllers, no scheduler, no nodes.
    pub api_server_only: Option<PathBuf>,
    /// Nice value of kwok (`None`: inherited). kwok stands in for the nodes' kubelets, each of
    /// which has a machine of its own in a real cluster; a fleet benchmark that keeps both
    /// cores busy raises kwok's priority so that it keeps reading its pod watch, as a node
    /// would, instead of being cut off by the API server as a slow watcher and re-listing.
    pub kwok_nice: Option<i32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: NODES,
            pods_per_node: 500,
            controller_qps: None,
            local_volumes: None,
            api_server_only: None,
            kwok_nice: None,
        }
    }
}

/// The chart's audit rules (`charts/clinic-operator/files/audit-policy.yaml`) followed by a
/// catch-all that records the body of every other write: if the chart's rules let a Secret's
/// data through, or another object carried a password, the audit log of the suite would show
/// it, and the audit scenario searches that log for every generated password.
fn audit_policy_with_catch_all() -> Result<String> {
    let chart = workspace_root().join("charts/clinic-operator/files/audit-policy.yaml");
    let text = std::fs::read_to_string(&chart).with_context(|| format!("reading {}", chart.display()))?;
    let mut policy: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let rules = policy["rules"].as_sequence_mut().context("the chart's audit policy has rules")?;
    rules.push(serde_yaml::from_str("{level: Request, verbs: [create, update, patch]}")?);
    rules.push(serde_yaml::from_str("{level: None}")?);
    Ok(serde_yaml::to_string(&policy)?)
}

/// Ports this machine's kernel never picks on its own: below its ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768–60999 by default), so no outgoing connection and no
/// `bind(0)` can take one between the check here and the component's own `bind`. A port from
/// `bind(0)` could: an e2e run failed when kube-controller-manager found the port it was given
/// held, as the source port of one of the many client connections the suite opens.
const PORT_RANGE: std::ops::Range<u16> = 20000..32768;

/// A port of `PORT_RANGE` that nothing listens on, never handed out twice by this process;
/// each process starts at an offset of its own, so concurrent suites (the kind-workflow
/// scenario runs a nested one) walk different stretches of the range.
pub fn free_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(PORT_RANGE.end - PORT_RANGE.start);
    // The first caller sets the offset from the pid (times a prime, so neighbouring pids land
    // far apart); a racing second caller's value is equally good.
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        let _ = NEXT.compare_exchange(
            u32::MAX,
            std::process::id().wrapping_mul(7919) % span,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = PORT_RANGE.start + offset as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port in {PORT_RANGE:?}")
}

pub(crate) fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

/// Builds (or finds in the cache) the control-plane binaries and returns their directory.
pub fn binaries() -> Result<PathBuf> {
    cached_build("e2e/cluster/build.sh")
}

/// Builds (or finds in the cache) the floor's kube-apiserver (the oldest Kubernetes the docs and
/// the chart promise) and returns its directory.
pub fn floor_api_server() -> Result<PathBuf> {
    cached_build("e2e/cluster/floor/build.sh")
}

/// Runs one of the project's cached build scripts (`rel` from the repository root) and returns
/// the directory it prints last.
pub(crate) fn cached_build(rel: &str) -> Result<PathBuf> {
    let script = workspace_root().join(rel);
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed", script.display());
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.lines().last().unwrap_or_default().trim()))
}

/// The upstream CRD files (Velero, Prometheus Operator, cert-manager, Gateway API, Argo CD)
/// from their Go modules.
pub fn upstream_crds() -> Result<Vec<PathBuf>> {
    let script = workspace_root().join("e2e/cluster/crds.sh");
    let out = Command::new("bash").arg(&script).stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        bail!("{} failed", script.display());
    }
    Ok(String::from_utf8(out.stdout)?.lines().map(PathBuf::from).collect())
}

impl ControlPlane {
    /// Starts a control plane in a new temporary directory.
    pub fn start() -> Result<ControlPlane> {
        let started = Instant::now();
        let bin = binaries()?;
        // Several control planes may run in one process (a scenario may need its own).
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("clinic-e2e-{}-{n}", std::process::id()));
        Self::start_in(&bin, &dir)
            .inspect(|_| eprintln!("control plane ready in {:.1}s", started.elapsed().as_secs_f64()))
    }

    /// Starts a control plane with its files under `dir`.
    pub fn start_in(bin: &Path, dir: &Path) -> Result<ControlPlane> {
        Self::start_with(bin, dir, Options::default())
    }

    /// Starts a control plane of a given size with its files under `dir`.
    pub fn start_with(bin: &Path, dir: &Path, options: Options) -> Result<ControlPlane> {
        std::fs::create_dir_all(dir.join("logs"))?;
        let pki = pki::generate(&dir.join("pki"))?;
        let etcd_port = free_port()?;
        let etcd_peer = free_port()?;
        let api_port = free_port()?;
        let kcm_port = free_port()?;
        let scheduler_port = free_port()?;
        let shm = Path::new("/dev/shm");
        let etcd_base = if shm.is_dir() { shm.to_path_buf() } else { dir.to_path_buf() };
        remove_stale_etcd_data(&etcd_base);
        let etcd_data = etcd_base.join(format!("clinic-e2e-etcd-{}-{}", std::process::id(), api_port));
        let kubeconfig = dir.join("admin.kubeconfig");
        let mut plane = ControlPlane {
            dir: dir.to_path_buf(),
            bin: bin.to_path_buf(),
            kubeconfig: kubeconfig.clone(),
            api_port,
            pki: pki.clone(),
            etcd_data: etcd_data.clone(),
            processes: Vec::new(),
            provisioner: None,
            keep_dir: std::env::var_os("E2E_KEEP_DIR").is_some(),
        };
        write_admin_kubeconfig(&kubeconfig, api_port, &pki)?;

        plane.spawn(
            "etcd",
            &[
                "--name=e2e".into(),
                format!("--data-dir={}", etcd_data.display()),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=e2e=http://127.0.0.1:{etcd_peer}"),
                "--unsafe-no-fsync=true".into(),
                "--auto-compaction-retention=1".into(),
                "--quota-backend-bytes=4294967296".into(),
                "--log-level=warn".into(),
            ],
        )?;
        wait_until("etcd", Duration::from_secs(30), || {
            plane.check_running()?;
            Ok(TcpStream::connect(("127.0.0.1", etcd_port)).is_ok())
        })?;

        let p = |path: &Path| path.display().to_string();
        let audit_policy = dir.join("audit-policy.yaml");
        std::fs::write(&audit_policy, audit_policy_with_catch_all()?)?;
        let api_server_dir = options.api_server_only.clone().unwrap_or_else(|| bin.to_path_buf());
        plane.spawn_from(
            &api_server_dir,
            "kube-apiserver",
            None,
            &[
                format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                // No default route in a sandbox: advertise loopback, and since loopback cannot be
                // an endpoint of the `kubernetes` Service, do not reconcile that endpoint.
                "--advertise-address=127.0.0.1".into(),
                "--endpoint-reconciler-type=none".into(),
                format!("--tls-cert-file={}", p(&pki.apiserver_cert)),
                format!("--tls-private-key-file={}", p(&pki.apiserver_key)),
                format!("--client-ca-file={}", p(&pki.ca_cert)),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", p(&pki.sa_pub)),
                format!("--service-account-signing-key-file={}", p(&pki.sa_key)),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--authorization-mode=Node,RBAC".into(),
                // The real node (when one runs) is reached on its InternalIP: no resolver here
                // knows node names.
                "--kubelet-preferred-address-types=InternalIP".into(),
                format!("--kubelet-client-certificate={}", p(&pki.kubelet_client_cert)),
                format!("--kubelet-client-key={}", p(&pki.kubelet_client_key)),
                "--allow-privileged=true".into(),
                "--profiling=false".into(),
                format!("--audit-policy-file={}", p(&audit_policy)),
                format!("--audit-log-path={}", p(&plane.audit_log())),
                "--audit-log-format=json".into(),
                "--v=1".into(),
            ],
        )?;
        wait_until("kube-apiserver /readyz", Duration::from_secs(90), || {
            plane.check_running()?;
            Ok(plane.kubectl(&["get", "--raw", "/readyz"]).is_ok())
        })?;
        if options.api_server_only.is_some() {
            return Ok(plane);
        }

        plane.spawn(
            "kube-controller-manager",
            &[
                format!("--kubeconfig={}", p(&kubeconfig)),
                format!("--authentication-kubeconfig={}", p(&kubeconfig)),
                format!("--authorization-kubeconfig={}", p(&kubeconfig)),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={kcm_port}"),
                "--leader-elect=false".into(),
                "--controllers=*".into(),
                "--use-service-account-credentials=true".into(),
                format!("--service-account-private-key-file={}", p(&pki.sa_key)),
                format!("--root-ca-file={}", p(&pki.ca_cert)),
                format!("--kube-api-qps={}", options.controller_qps.unwrap_or(20)),
                format!("--kube-api-burst={}", options.controller_qps.map_or(30, |q| q * 2)),
                "--v=1".into(),
            ],
        )?;
        let scheduler_config = dir.join("scheduler.yaml");
        std::fs::write(
            &scheduler_config,
            format!(
                "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nclientConnection:\n  kubeconfig: {}\n  qps: {}\n  burst: {}\nleaderElection:\n  leaderElect: false\n",
                p(&kubeconfig),
                options.controller_qps.unwrap_or(50),
                options.controller_qps.map_or(100, |q| q * 2)
            ),
        )?;
        plane.spawn(
            "kube-scheduler",
            &[
                format!("--config={}", p(&scheduler_config)),
                format!("--authentication-kubeconfig={}", p(&kubeconfig)),
                format!("--authorization-kubeconfig={}", p(&kubeconfig)),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={scheduler_port}"),
                "--v=1".into(),
            ],
        )?;
        wait_until("controller-manager and scheduler ports", Duration::from_secs(60), || {
            plane.check_running()?;
            Ok(TcpStream::connect(("127.0.0.1", kcm_port)).is_ok()
                && TcpStream::connect(("127.0.0.1", scheduler_port)).is_ok())
        })?;
        // The serviceaccount and root-ca publisher controllers run: the cluster is usable.
        wait_until("default ServiceAccount and kube-root-ca.crt", Duration::from_secs(60), || {
            plane.check_running()?;
            Ok(plane
                .kubectl(&["-n", "default", "get", "serviceaccount/default", "configmap/kube-root-ca.crt"])
                .is_ok())
        })?;

        let stages = dir.join("kwok-stages.yaml");
        let mut all = String::new();
        for entry in std::fs::read_dir(bin.join("kwok-stages"))? {
            let path = entry?.path();
            all.push_str("---\n");
            all.push_str(&std::fs::read_to_string(&path)?);
            all.push('\n');
        }
        std::fs::write(&stages, all)?;
        let bin = plane.bin.clone();
        plane.spawn_from(
            &bin,
            "kwok",
            options.kwok_nice,
            &[
                format!("--kubeconfig={}", p(&kubeconfig)),
                format!("--config={}", p(&stages)),
                "--manage-all-nodes=false".into(),
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
                "--cidr=10.244.0.0/16".into(),
                "--node-lease-duration-seconds=40".into(),
            ],
        )?;
        plane.apply_yaml(&cluster_objects(&options))?;
        if options.nodes > 0 {
            wait_until("fake nodes Ready", Duration::from_secs(60), || {
                plane.check_running()?;
                Ok(plane
                    .kubectl(&["wait", "--for=condition=Ready", "node", "-l", "type=kwok", "--timeout=2s"])
                    .is_ok())
            })?;
        }
        plane.provisioner = Some(Provisioner::start(&kubeconfig, options.local_volumes.clone())?);
        Ok(plane)
    }

    /// A cluster somebody else runs (e.g. kind in CI), reached through `kubeconfig` with the
    /// kubectl found on PATH. Nothing is started or stopped; methods that need the local
    /// control plane's keys (service-account kubeconfigs) are not available.
    pub fn attach(kubeconfig: PathBuf) -> Result<ControlPlane> {
        let kubectl = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .find(|d| d.join("kubectl").is_file())
            .context("attach mode needs kubectl on PATH")?;
        let dir = std::env::temp_dir().join(format!("clinic-e2e-attach-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(ControlPlane {
            etcd_data: dir.join("none"),
            dir,
            bin: kubectl,
            kubeconfig,
            api_port: 0,
            pki: Pki::default(),
            processes: Vec::new(),
            provisioner: None,
            keep_dir: false,
        })
    }

    /// The API server's audit log (JSON lines), written under the chart's audit rules; see
    /// [`audit_policy_with_catch_all`]. Attached clusters have none here.
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("logs/audit.log")
    }

    /// Path of the kubectl built with the control plane (same version).
    pub fn kubectl_path(&self) -> PathBuf {
        self.bin.join("kubectl")
    }

    /// Runs kubectl as cluster admin and returns its standard output.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_as(&self.kubeconfig, args)
    }

    /// Runs kubectl with another kubeconfig.
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> Result<String> {
        let out = Command::new(self.kubectl_path())
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .output()
            .context("running kubectl")?;
        if !out.status.success() {
            bail!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Applies YAML (server-side) as cluster admin.
    pub fn apply_yaml(&self, yaml: &str) -> Result<String> {
        let path = self.dir.join(format!(
            "apply-{}.yaml",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos()
        ));
        std::fs::write(&path, yaml)?;
        let result =
            self.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &path.display().to_string()]);
        let _ = std::fs::remove_file(&path);
        result
    }

    /// Installs CRDs from files and waits until they are established.
    pub fn install_crds(&self, files: &[PathBuf]) -> Result<()> {
        for file in files {
            self.kubectl(&[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                &file.display().to_string(),
            ])?;
        }
        // A CRD created a moment ago may have no status yet, which `kubectl wait` reports as an
        // error rather than waiting: ask again until Established or a minute has passed.
        wait_until("CRDs Established", Duration::from_secs(60), || {
            Ok(self
                .kubectl(&["wait", "--for=condition=Established", "crd", "--all", "--timeout=10s"])
                .is_ok())
        })
    }

    /// Creates a ServiceAccount bound, in each of `namespaces`, to the Role in `role_file` (and
    /// nothing cluster-wide), and writes a kubeconfig that authenticates as it.
    pub fn namespaced_service_account_kubeconfig(
        &self,
        role_file: &Path,
        namespaces: &[&str],
        sa_namespace: &str,
        name: &str,
    ) -> Result<PathBuf> {
        self.apply_yaml(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {sa_namespace}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {sa_namespace}\n"
        ))?;
        self.bind_role(role_file, namespaces, sa_namespace, name)?;
        self.token_kubeconfig(sa_namespace, name)
    }

    /// Creates the Role of `role_file` in each of `namespaces` and binds it to the ServiceAccount
    /// `sa_namespace/name`, as the chart does.
    pub fn bind_role(
        &self,
        role_file: &Path,
        namespaces: &[&str],
        sa_namespace: &str,
        name: &str,
    ) -> Result<()> {
        let role: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(role_file)?)?;
        let role_name = role["metadata"]["name"].as_str().context("Role without a name")?.to_string();
        for ns in namespaces {
            self.kubectl(&["-n", ns, "apply", "--server-side", "-f", &role_file.display().to_string()])?;
            self.apply_yaml(&format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: {role_name}\n  namespace: {ns}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: {role_name}\nsubjects:\n- kind: ServiceAccount\n  name: {name}\n  namespace: {sa_namespace}\n"
            ))?;
        }
        Ok(())
    }

    /// The operator's identity as the chart installs it in cluster mode with its default policy:
    /// `clinic-system/clinic-operator` bound to the ClusterRole of `files/clusterrole.yaml`, to
    /// the Velero Role of `files/role-velero.yaml` in `velero` (created if missing), and to the
    /// ledger's Role of `files/role-ledger.yaml` in `clinic-system`.
    pub fn operator_kubeconfig(&self) -> Result<PathBuf> {
        let files = crate::workspace_root().join("charts/clinic-operator/files");
        self.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: velero\n")?;
        let kubeconfig = self.service_account_kubeconfig(
            &files.join("clusterrole.yaml"),
            "clinic-system",
            "clinic-operator",
        )?;
        self.bind_role(&files.join("role-velero.yaml"), &["velero"], "clinic-system", "clinic-operator")?;
        self.bind_role(
            &files.join("role-ledger.yaml"),
            &["clinic-system"],
            "clinic-system",
            "clinic-operator",
        )?;
        Ok(kubeconfig)
    }

    /// A kubeconfig that authenticates as an existing ServiceAccount (a TokenRequest token).
    pub fn token_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let token = self.kubectl(&["-n", namespace, "create", "token", name, "--duration=24h"])?;
        let path = self.dir.join(format!("{name}.kubeconfig"));
        let ca = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&self.pki.ca_cert)?);
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority-data: {ca}\nusers:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: {name}, namespace: {namespace}}}\ncurrent-context: e2e\n",
                port = self.api_port,
                token = token.trim(),
            ),
        )?;
        Ok(path)
    }

    /// Creates a ServiceAccount bound to the ClusterRole in `clusterrole_file` and writes a
    /// kubeconfig that authenticates as it (a TokenRequest token): the identity the operator
    /// runs with in the tests.
    pub fn service_account_kubeconfig(
        &self,
        clusterrole_file: &Path,
        namespace: &str,
        name: &str,
    ) -> Result<PathBuf> {
        let role: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(clusterrole_file)?)?;
        let role_name = role["metadata"]["name"].as_str().context("ClusterRole without a name")?.to_string();
        self.kubectl(&["apply", "--server-side", "-f", &clusterrole_file.display().to_string()])?;
        self.apply_yaml(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {namespace}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {name}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: {role_name}\nsubjects:\n- kind: ServiceAccount\n  name: {name}\n  namespace: {namespace}\n"
        ))?;
        self.token_kubeconfig(namespace, name)
    }

    /// The last lines of a component's log (for failure reports).
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        log_tail(&self.dir.join("logs"), component, lines)
    }

    /// Name and process id of each component started (etcd, kube-apiserver, ...), for
    /// benchmarks that read their CPU time in /proc.
    pub fn component_pids(&self) -> Vec<(String, u32)> {
        self.processes.iter().map(|(name, child)| (name.clone(), child.id())).collect()
    }

    /// Fails with the log tail of a component that exited.
    fn check_running(&mut self) -> Result<()> {
        check_running(&mut self.processes, &self.dir.join("logs"))
    }

    fn spawn(&mut self, name: &str, args: &[String]) -> Result<()> {
        let bin = self.bin.clone();
        self.spawn_from(&bin, name, None, args)
    }

    /// Starts `name` from `bin`, logging to `logs/<name>.log`, at priority `nice` if given.
    fn spawn_from(&mut self, bin: &Path, name: &str, nice: Option<i32>, args: &[String]) -> Result<()> {
        let mut command = logged_command(name, &bin.join(name), args, &self.dir.join("logs"))?;
        if let Some(nice) = nice {
            // SAFETY: setpriority is async-signal-safe and touches only the child being set up;
            // the threads its runtime starts later inherit the value.
            unsafe {
                command.pre_exec(move || {
                    if libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().with_context(|| format!("starting {name} ({})", bin.display()))?;
        self.processes.push((name.to_string(), child));
        Ok(())
    }

    /// Stops everything (also done on drop).
    pub fn stop(&mut self) {
        if let Some(p) = self.provisioner.take() {
            p.stop();
        }
        while let Some((_, mut child)) = self.processes.pop() {
            terminate(&mut child);
        }
        let _ = std::fs::remove_dir_all(&self.etcd_data);
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// etcd data of runs whose process is gone (a killed test run cannot remove its own).
fn remove_stale_etcd_data(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("clinic-e2e-etcd-").and_then(|r| r.split('-').next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<libc::pid_t>() else { continue };
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid, 0) } != 0 {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The last lines of `<log_dir>/<component>.log`.
pub fn log_tail(log_dir: &Path, component: &str, lines: usize) -> String {
    let text = std::fs::read_to_string(log_dir.join(format!("{component}.log"))).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Fails with the log tail of the first of `processes` that exited.
pub fn check_running(processes: &mut [(String, Child)], log_dir: &Path) -> Result<()> {
    for (name, child) in processes.iter_mut() {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{name} exited ({status}):\n{}", log_tail(log_dir, name, 20));
        }
    }
    Ok(())
}

/// Blocks SIGINT and SIGTERM in this thread and every thread it starts later (threads inherit
/// the mask), and returns the set for `sigwait`: one thread then handles them in order. Call it
/// before any thread exists.
pub fn block_termination_signals() -> libc::sigset_t {
    // SAFETY: plain signal-mask calls on a set on this stack.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Starts `program` with its output in `<log_dir>/<name>.log`; it dies with the calling thread.
pub fn spawn_logged(name: &str, program: &Path, args: &[String], log_dir: &Path) -> Result<Child> {
    let mut command = logged_command(name, program, args, log_dir)?;
    command.spawn().with_context(|| format!("starting {name} ({})", program.display()))
}

fn logged_command(name: &str, program: &Path, args: &[String], log_dir: &Path) -> Result<Command> {
    let log = File::create(log_dir.join(format!("{name}.log")))?;
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    die_with_parent(&mut command);
    Ok(command)
}

/// SIGTERM, a grace period, then SIGKILL.
pub fn terminate(child: &mut Child) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: signalling a child process we spawned and have not reaped yet.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Makes the child receive SIGKILL when the thread that spawned it dies, so nothing outlives a
/// crashed or killed test process.
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // A parent that waits for signals blocks them; the child must not inherit that.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
}

fn write_admin_kubeconfig(path: &Path, port: u16, pki: &Pki) -> Result<()> {
    let b64 = |p: &Path| -> Result<String> {
        Ok(base64::engine::general_purpose::STANDARD.encode(std::fs::read(p)?))
    };
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority-data: {ca}\nusers:\n- name: e2e-admin\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: e2e-admin, namespace: default}}\ncurrent-context: e2e\n",
            ca = b64(&pki.ca_cert)?,
            cert = b64(&pki.admin_cert)?,
            key = b64(&pki.admin_key)?,
        ),
    )?;
    Ok(())
}

/// Fake nodes and the default StorageClass served by the in-process provisioner.
fn cluster_objects(options: &Options) -> String {
    let mut yaml = String::new();
    let pods = options.pods_per_node;
    for i in 0..options.nodes {
        yaml.push_str(&format!(
            r#"---
apiVersion: v1
kind: Node
metadata:
  name: e2e-node-{i}
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/hostname: e2e-node-{i}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    topology.kubernetes.io/region: fr-par
    topology.kubernetes.io/zone: fr-par-{zone}
    type: kwok
status:
  allocatable: {{cpu: "1000", memory: 8Ti, ephemeral-storage: 100Ti, pods: "{pods}"}}
  capacity: {{cpu: "1000", memory: 8Ti, ephemeral-storage: 100Ti, pods: "{pods}"}}
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    kubeletVersion: fake
    kubeProxyVersion: fake
    bootID: ""
    containerRuntimeVersion: ""
    kernelVersion: ""
    machineID: ""
    osImage: ""
    systemUUID: ""
"#,
            zone = i + 1
        ));
    }
    yaml.push_str(&format!(
        r#"---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: {provisioner}
reclaimPolicy: Delete
volumeBindingMode: {binding}
"#,
        provisioner = crate::provisioner::PROVISIONER,
        // Real pods: the volume is made once the scheduler has picked the node, as with any
        // node-local storage (binding first would race the scheduler's first attempt).
        binding = if options.local_volumes.is_some() { "WaitForFirstConsumer" } else { "Immediate" },
    ));
    yaml
}
