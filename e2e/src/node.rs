//! One real node beside the kwok nodes: containerd + runc, the kubelet, the bridge CNI plugin,
//! kube-proxy (iptables mode) for Services, CoreDNS as a pod for cluster DNS, and kube-router's
//! firewall so that NetworkPolicies are enforced. Pods run from the images that
//! `e2e/images/build.sh` makes (imported under the references the operator renders).
//!
//! Everything is local to the machine and removable: files under the node's run directory,
//! two bridges of its own (`cle2enode` holds the node IP from a documentation range,
//! `cle2e0` is the pods' network), a routing rule that sends pod traffic nowhere but that bridge
//! (nothing is routed out, no masquerade), and the iptables/ipset state the node components add.
//! What the node changed on the host is recorded in `host-state.json` before it changes it, so
//! [`teardown`] can put everything back, on drop, on the next start after a killed run
//! (`reap_stale`), or from `e2e-cluster down`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::cluster::{ControlPlane, cached_build, free_port, spawn_logged, terminate, wait_until};
use crate::pki::REAL_NODE_NAME;

pub const NODE_NAME: &str = REAL_NODE_NAME;
/// The node's address (TEST-NET-2, RFC 5737), on a bridge of the node's own.
pub const NODE_IP: &str = "198.51.100.10";
/// Pod addresses of the real node (kwok's fake pods use 10.244.0.0/16).
pub const POD_CIDR: &str = "10.245.0.0/24";
const POD_GATEWAY: &str = "10.245.0.1/24";
/// The cluster DNS Service address.
pub const DNS_IP: &str = "10.96.0.10";
const NODE_LINK: &str = "cle2enode";
/// The pods' bridge.
pub const POD_BRIDGE: &str = "cle2e0";
/// Routing table and rule priority for traffic that enters from the pods' bridge.
const ROUTE_TABLE: &str = "4245";
const CGROUP_ROOT: &str = "clinic-e2e-node";
const STATE_FILE: &str = "host-state.json";
const RUN_PREFIX: &str = "clinic-e2e-node-";

/// The images of the real-node tests, built (or found in the cache) by `e2e/images/build.sh`.
pub fn images() -> Result<PathBuf> {
    cached_build("e2e/images/build.sh")
}

/// CoreDNS and kube-router, built (or found in the cache) by `e2e/node/build.sh`.
pub fn addons() -> Result<PathBuf> {
    cached_build("e2e/node/build.sh")
}

/// The run directory of this process' real node.
pub fn run_dir() -> PathBuf {
    std::env::temp_dir().join(format!("{RUN_PREFIX}{}", std::process::id()))
}

/// Where the provisioner puts the node's `local` volumes (see [`crate::cluster::Options`]).
pub fn local_volumes() -> crate::provisioner::LocalVolumes {
    crate::provisioner::LocalVolumes { dir: run_dir().join("volumes"), node: NODE_NAME.to_string() }
}

/// What the node changes on the host, saved before it changes it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct HostState {
    /// `iptables-save` / `ip6tables-save` before the node started.
    iptables: String,
    ip6tables: String,
    ipsets: Vec<String>,
    netns: Vec<String>,
    /// sysctl path -> value before.
    sysctls: BTreeMap<String, String>,
    /// The containerd socket, to find this node's shims.
    containerd_socket: String,
}

/// A running real node.
pub struct RealNode {
    pub dir: PathBuf,
    pub containerd_socket: PathBuf,
    processes: Vec<(String, Child)>,
    relay_stop: Arc<AtomicBool>,
    keep_dir: bool,
    torn_down: bool,
}

fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sh_stdin(program: &str, args: &[&str], input: &str) -> Result<()> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    child.stdin.take().context("stdin")?.write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{program}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn netns_list() -> Vec<String> {
    sh("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

fn ipset_list() -> Vec<String> {
    sh("ipset", &["list", "-n"]).unwrap_or_default().lines().map(String::from).collect()
}

fn sysctl_path(name: &str) -> PathBuf {
    Path::new("/proc/sys").join(name.replace('.', "/"))
}

/// The sysctls the node sets: bridged pod traffic goes through iptables (kube-proxy and the
/// policy firewall need it), and forwarding is on for the pods' bridge only.
fn sysctls_to_set() -> Vec<(String, &'static str)> {
    vec![("net.bridge.bridge-nf-call-iptables".into(), "1"), ("net.ipv4.ip_forward".into(), "1")]
}

/// Every interface's forwarding switch (turning on ip_forward turns them all on).
fn interface_forwarding() -> Vec<String> {
    std::fs::read_dir("/proc/sys/net/ipv4/conf")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| format!("net.ipv4.conf.{}.forwarding", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default()
}

fn read_sysctl(name: &str) -> Option<String> {
    std::fs::read_to_string(sysctl_path(name)).ok().map(|v| v.trim().to_string())
}

fn write_sysctl(name: &str, value: &str) -> Result<()> {
    std::fs::write(sysctl_path(name), value).with_context(|| format!("setting {name}={value}"))
}

impl RealNode {
    /// Starts the node and waits until it is Ready with cluster DNS answering. The control plane
    /// should run without kwok nodes (or pods need a selector) so that pods land here.
    pub fn start(plane: &ControlPlane) -> Result<RealNode> {
        let started = Instant::now();
        reap_stale();
        let images = images()?;
        let addons = addons()?;
        let dir = run_dir();
        if dir.join("owner.pid").exists() {
            bail!("{} exists: is another real node running in this process?", dir.display());
        }
        for d in ["logs", "cni/net.d", "cni/ipam", "containerd", "kubelet", "pod-logs", "volumes"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        std::fs::write(dir.join("owner.pid"), std::process::id().to_string())?;
        let socket = dir.join("containerd/containerd.sock");
        let mut node = RealNode {
            dir: dir.clone(),
            containerd_socket: socket.clone(),
            processes: Vec::new(),
            relay_stop: Arc::new(AtomicBool::new(false)),
            keep_dir: std::env::var_os("E2E_KEEP_DIR").is_some(),
            torn_down: false,
        };
        // From here on, whatever fails is undone by Drop.
        node.prepare_host()?;
        node.start_containerd()?;
        let import = Instant::now();
        node.ctr(&["images", "import", &images.join("images.oci.tar").display().to_string()])?;
        eprintln!("real node: images imported in {:.1}s", import.elapsed().as_secs_f64());
        node.start_kubelet(plane)?;
        wait_until("the real node Ready", Duration::from_secs(90), || {
            node.check_running()?;
            Ok(plane
                .kubectl(&["wait", "--for=condition=Ready", &format!("node/{NODE_NAME}"), "--timeout=2s"])
                .is_ok())
        })?;
        node.start_kube_proxy(plane)?;
        node.start_api_relay(plane)?;
        node.start_kube_router(plane, &addons)?;
        plane.apply_yaml(&coredns_manifests())?;
        wait_until("cluster DNS Ready", Duration::from_secs(120), || {
            node.check_running()?;
            Ok(plane
                .kubectl(&[
                    "-n",
                    "kube-system",
                    "wait",
                    "--for=condition=Ready",
                    "pod",
                    "-l",
                    "k8s-app=kube-dns",
                    "--timeout=2s",
                ])
                .is_ok())
        })
        .with_context(|| {
            format!(
                "kubelet log:\n{}\ncontainerd log:\n{}",
                node.log_tail("kubelet", 15),
                node.log_tail("containerd", 15)
            )
        })?;
        eprintln!("real node ready in {:.1}s", started.elapsed().as_secs_f64());
        Ok(node)
    }

    fn prepare_host(&mut self) -> Result<()> {
        let mut state = HostState {
            iptables: sh("iptables-save", &[])?,
            ip6tables: sh("ip6tables-save", &[]).unwrap_or_default(),
            ipsets: ipset_list(),
            netns: netns_list(),
            containerd_socket: self.containerd_socket.display().to_string(),
            ..Default::default()
        };
        let forwarding = interface_forwarding();
        for name in sysctls_to_set().iter().map(|(n, _)| n.clone()).chain(forwarding.iter().cloned()) {
            if let Some(value) = read_sysctl(&name) {
                state.sysctls.insert(name, value);
            }
        }
        std::fs::write(self.dir.join(STATE_FILE), serde_json::to_vec_pretty(&state)?)?;

        for (name, value) in sysctls_to_set() {
            write_sysctl(&name, value)?;
        }
        // ip_forward switched every interface on: only the node's own bridges forward.
        for name in &forwarding {
            if let Some(before) = state.sysctls.get(name) {
                write_sysctl(name, before)?;
            }
        }
        for (link, address) in [(NODE_LINK, format!("{NODE_IP}/32")), (POD_BRIDGE, POD_GATEWAY.to_string())] {
            sh("ip", &["link", "add", link, "type", "bridge"])?;
            sh("ip", &["addr", "add", &address, "dev", link])?;
            sh("ip", &["link", "set", link, "up"])?;
            write_sysctl(&format!("net.ipv4.conf.{link}.forwarding"), "1")?;
        }
        // Traffic from pods goes to other pods on the bridge, or nowhere.
        sh("ip", &["route", "add", POD_CIDR, "dev", POD_BRIDGE, "table", ROUTE_TABLE])?;
        sh("ip", &["route", "add", "unreachable", "default", "table", ROUTE_TABLE])?;
        sh("ip", &["rule", "add", "iif", POD_BRIDGE, "lookup", ROUTE_TABLE, "pref", ROUTE_TABLE])?;
        for hierarchy in cgroup_hierarchies() {
            std::fs::create_dir_all(hierarchy.join(CGROUP_ROOT))?;
        }
        Ok(())
    }

    fn start_containerd(&mut self) -> Result<()> {
        let d = &self.dir;
        let cni = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": "clinic-e2e",
            "plugins": [{
                "type": "bridge",
                "bridge": POD_BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": POD_CIDR, "gateway": POD_GATEWAY.trim_end_matches("/24") }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": d.join("cni/ipam").display().to_string(),
                },
            }, {
                "type": "portmap",
                "capabilities": { "portMappings": true },
            }],
        });
        std::fs::write(d.join("cni/net.d/10-clinic-e2e.conflist"), serde_json::to_vec_pretty(&cni)?)?;
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  # The sandbox may not lower its OOM score on this machine.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  # Every image is imported: a pull must fail at once, never look for a registry outside.
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."*"]
    endpoint = ["http://127.0.0.1:9"]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    endpoint = ["http://127.0.0.1:9"]
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
            root = d.join("containerd/root").display(),
            state = d.join("containerd/state").display(),
            socket = self.containerd_socket.display(),
            opt = d.join("containerd/opt").display(),
            cni = d.join("cni/net.d").display(),
        );
        let path = d.join("containerd/config.toml");
        std::fs::write(&path, config)?;
        self.spawn("containerd", Path::new("containerd"), &["--config".into(), path.display().to_string()])?;
        wait_until("containerd", Duration::from_secs(30), || {
            self.check_running()?;
            Ok(self.ctr(&["version"]).is_ok())
        })
    }

    /// Runs `ctr` against this node's containerd, in the Kubernetes namespace.
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        let socket = self.containerd_socket.display().to_string();
        let mut all = vec!["--address", socket.as_str(), "--namespace", "k8s.io"];
        all.extend_from_slice(args);
        sh("ctr", &all)
    }

    fn start_kubelet(&mut self, plane: &ControlPlane) -> Result<()> {
        let d = self.dir.clone();
        let pki = &plane.pki;
        let kubeconfig = d.join("kubelet.kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\nusers:\n- name: node\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: node}}\ncurrent-context: e2e\n",
                port = plane.api_port,
                ca = pki.ca_cert.display(),
                cert = pki.node_cert.display(),
                key = pki.node_key.display(),
            ),
        )?;
        let resolv = d.join("resolv.conf");
        // Pods with dnsPolicy Default get this: no resolver outside the cluster.
        std::fs::write(&resolv, format!("nameserver {DNS_IP}\n"))?;
        let config = d.join("kubelet.yaml");
        std::fs::write(
            &config,
            format!(
                r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {NODE_IP}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {ca}}}
# Test node: any client certificate of the test CA (the API server's) may use the kubelet API.
authorization: {{mode: AlwaysAllow}}
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP_ROOT}
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://{socket}
clusterDNS: [{DNS_IP}]
clusterDomain: cluster.local
resolvConf: {resolv}
# The machine's disk is shared: never evict or garbage-collect test pods and images for the
# node's sake. Each pod's own ephemeral-storage limits are enforced as on any production node
# (the node reports its ephemeral-storage, so pods that request some are scheduled).
evictionHard: {{}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
localStorageCapacityIsolation: true
podLogsDir: {logs}
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
maxPods: 110
"#,
                port = free_port()?,
                healthz = free_port()?,
                ca = pki.ca_cert.display(),
                socket = self.containerd_socket.display(),
                resolv = resolv.display(),
                logs = d.join("pod-logs").display(),
            ),
        )?;
        let kubelet = plane.bin.join("kubelet");
        self.spawn(
            "kubelet",
            &kubelet,
            &[
                format!("--config={}", config.display()),
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--root-dir={}", d.join("kubelet").display()),
                format!("--hostname-override={NODE_NAME}"),
                format!("--node-ip={NODE_IP}"),
                // The labels the kwok nodes carry, so residency and spread rules behave alike.
                "--node-labels=type=real,topology.kubernetes.io/region=fr-par,topology.kubernetes.io/zone=fr-par-1"
                    .into(),
                "--v=1".into(),
            ],
        )
    }

    /// A copy of the admin kubeconfig in the run directory, so that every node component's
    /// command line names the directory (teardown finds them by it).
    fn kubeconfig(&self, plane: &ControlPlane) -> Result<PathBuf> {
        let path = self.dir.join("admin.kubeconfig");
        if !path.exists() {
            std::fs::copy(&plane.kubeconfig, &path)?;
        }
        Ok(path)
    }

    fn start_kube_proxy(&mut self, plane: &ControlPlane) -> Result<()> {
        let proxy = plane.bin.join("kube-proxy");
        let args = vec![
            format!("--kubeconfig={}", self.kubeconfig(plane)?.display()),
            format!("--hostname-override={NODE_NAME}"),
            "--proxy-mode=iptables".into(),
            format!("--cluster-cidr={POD_CIDR}"),
            format!("--nodeport-addresses={NODE_IP}/32"),
            format!("--metrics-bind-address=127.0.0.1:{}", free_port()?),
            format!("--healthz-bind-address=127.0.0.1:{}", free_port()?),
            // Leave the machine's conntrack settings and route_localnet alone.
            "--conntrack-max-per-core=0".into(),
            "--conntrack-tcp-timeout-established=0".into(),
            "--conntrack-tcp-timeout-close-wait=0".into(),
            "--iptables-localhost-nodeports=false".into(),
            "--v=1".into(),
        ];
        self.spawn("kube-proxy", &proxy, &args)
    }

    /// Pods reach the API server (CoreDNS watches Services) through the `kubernetes` Service:
    /// the API server listens on loopback only, so the node IP relays to it.
    fn start_api_relay(&mut self, plane: &ControlPlane) -> Result<()> {
        let listener = TcpListener::bind((NODE_IP, plane.api_port))
            .with_context(|| format!("binding {NODE_IP}:{}", plane.api_port))?;
        listener.set_nonblocking(true)?;
        let stop = self.relay_stop.clone();
        let port = plane.api_port;
        std::thread::Builder::new().name("api-relay".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) = TcpStream::connect(("127.0.0.1", port)) {
                            relay(client, server);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })?;
        // The API server does not reconcile the `kubernetes` Service's endpoints (it advertises
        // loopback): point them at the relay.
        plane.apply_yaml(&format!(
            "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: kubernetes\n  namespace: default\nsubsets:\n- addresses: [{{ip: {NODE_IP}}}]\n  ports: [{{name: https, port: {port}, protocol: TCP}}]\n"
        ))?;
        Ok(())
    }

    fn start_kube_router(&mut self, plane: &ControlPlane, addons: &Path) -> Result<()> {
        let args = vec![
            format!("--kubeconfig={}", self.kubeconfig(plane)?.display()),
            format!("--hostname-override={NODE_NAME}"),
            "--run-firewall=true".into(),
            "--run-router=false".into(),
            "--run-service-proxy=false".into(),
            "--enable-ipv6=false".into(),
            format!("--health-port={}", free_port()?),
            "--metrics-port=0".into(),
            "--v=1".into(),
        ];
        self.spawn("kube-router", &addons.join("kube-router"), &args)
    }

    fn spawn(&mut self, name: &str, program: &Path, args: &[String]) -> Result<()> {
        let child = spawn_logged(name, program, args, &self.dir.join("logs"))?;
        self.processes.push((name.to_string(), child));
        Ok(())
    }

    fn check_running(&mut self) -> Result<()> {
        crate::cluster::check_running(&mut self.processes, &self.dir.join("logs"))
    }

    /// The last lines of a node component's log.
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        crate::cluster::log_tail(&self.dir.join("logs"), component, lines)
    }

    /// Runs a command inside the network namespace of the pod with IP `pod_ip` (as the pod's
    /// own address), e.g. `curl`. Returns the exit status and output.
    pub fn in_pod_network(&self, pod_ip: &str, program: &str, args: &[&str]) -> Result<(bool, String)> {
        let netns = netns_of(pod_ip)?;
        let mut all = vec!["netns", "exec", netns.as_str(), program];
        all.extend_from_slice(args);
        let out = Command::new("ip").args(&all).output()?;
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Ok((out.status.success(), text))
    }

    /// Starts a long-running command (e.g. a listener) inside the network namespace of the pod
    /// with IP `pod_ip`; it is killed when the returned handle drops, also on a panic.
    pub fn spawn_in_pod_network(
        &self,
        pod_ip: &str,
        program: &str,
        args: &[&str],
    ) -> Result<PodNetworkProcess> {
        let netns = netns_of(pod_ip)?;
        let child = Command::new("ip")
            .args(["netns", "exec", netns.as_str(), program])
            .args(args)
            .stdin(Stdio::null())
            .spawn()?;
        Ok(PodNetworkProcess(child))
    }

    /// Process ids still running in the cgroup of the pod with `uid` (the kubelet names pod
    /// cgroups `pod<uid>`), in any hierarchy.
    pub fn pod_processes(&self, uid: &str) -> Vec<i32> {
        let mut out = Vec::new();
        for hierarchy in cgroup_hierarchies() {
            for cg in cgroups_below(&hierarchy.join(CGROUP_ROOT)) {
                if cg.components().any(|c| c.as_os_str().to_string_lossy() == format!("pod{uid}")) {
                    let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
                    out.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Stops everything and restores the host (also done on drop).
    pub fn stop(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        self.relay_stop.store(true, Ordering::Relaxed);
        while let Some((_, mut child)) = self.processes.pop() {
            terminate(&mut child);
        }
        teardown(&self.dir, self.keep_dir);
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        self.stop();
    }
}

fn relay(client: TcpStream, server: TcpStream) {
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16384];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    };
    if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
        pipe(client, s2);
        pipe(server, c2);
    }
}

/// The network namespace holding `ip`.
/// A command running in a pod's network namespace ([`RealNode::spawn_in_pod_network`]).
pub struct PodNetworkProcess(Child);

impl Drop for PodNetworkProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn netns_of(ip: &str) -> Result<String> {
    for ns in netns_list().into_iter().filter(|n| n.starts_with("cni-")) {
        let addrs = sh("ip", &["netns", "exec", &ns, "ip", "-4", "-o", "addr"]).unwrap_or_default();
        if addrs.split_whitespace().any(|w| w.split('/').next() == Some(ip)) {
            return Ok(ns);
        }
    }
    bail!("no network namespace has {ip}")
}

fn cgroup_hierarchies() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && (f[2] == "cgroup" || f[2] == "cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .collect()
}

/// Every cgroup below `root`, deepest first.
fn cgroups_below(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        out.push(dir);
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

fn kill_pids(pids: impl IntoIterator<Item = i32>) -> usize {
    let mut n = 0;
    for pid in pids {
        // SAFETY: sending a signal to a process id; no memory is touched.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        n += 1;
    }
    n
}

/// Puts the host back as `dir/host-state.json` recorded it: containers and shims killed,
/// containerd's mounts and the pods' network namespaces removed, cgroups, bridges, routes,
/// iptables rules, ipsets and sysctls restored, then `dir` removed. Safe to run twice.
pub fn teardown(dir: &Path, keep_dir: bool) {
    let state: HostState = std::fs::read(dir.join(STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut problems = Vec::new();

    // 1. The node's own components (their command lines name the run directory), every process
    //    of every pod (they live in the node's cgroups), and the shims.
    let dir_str = dir.display().to_string();
    for _ in 0..50 {
        let mut killed = kill_pids(processes_mentioning(&dir_str));
        for hierarchy in cgroup_hierarchies() {
            for cg in cgroups_below(&hierarchy.join(CGROUP_ROOT)) {
                let pids = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
                killed += kill_pids(pids.lines().filter_map(|l| l.trim().parse().ok()));
            }
        }
        if !state.containerd_socket.is_empty() {
            killed += kill_pids(processes_mentioning(&state.containerd_socket));
        }
        if killed == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // 2. Mounts under the run dir (overlays, shm, the kubelet's volumes), deepest first.
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(String::from))
        .filter(|m| m.starts_with(&dir_str))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        if let Ok(path) = std::ffi::CString::new(m.clone()) {
            // SAFETY: a valid NUL-terminated path; MNT_DETACH never blocks.
            unsafe {
                libc::umount2(path.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
    // 3. The pods' network namespaces (their veths go with them).
    for ns in netns_list() {
        if ns.starts_with("cni-") && !state.netns.contains(&ns) {
            let path = format!("/run/netns/{ns}");
            if let Ok(c) = std::ffi::CString::new(path) {
                // SAFETY: as above.
                unsafe {
                    libc::umount2(c.as_ptr(), libc::MNT_DETACH);
                }
            }
            if let Err(e) = sh("ip", &["netns", "delete", &ns]) {
                problems.push(format!("{e:#}"));
            }
        }
    }
    // 4. cgroups.
    for hierarchy in cgroup_hierarchies() {
        for cg in cgroups_below(&hierarchy.join(CGROUP_ROOT)) {
            let _ = std::fs::remove_dir(&cg);
        }
    }
    // 5. Routing and links.
    let _ = sh("ip", &["rule", "del", "pref", ROUTE_TABLE]);
    let _ = sh("ip", &["route", "flush", "table", ROUTE_TABLE]);
    for link in [POD_BRIDGE, NODE_LINK] {
        let _ = sh("ip", &["link", "del", link]);
    }
    // 6. Firewall: the rules as they were, then the sets nothing references any more.
    if std::fs::metadata(dir.join(STATE_FILE)).is_ok() {
        for (family, saved) in [("iptables", &state.iptables), ("ip6tables", &state.ip6tables)] {
            if let Err(e) = restore_rules(family, saved) {
                problems.push(format!("{e:#}"));
            }
        }
        for set in ipset_list() {
            if !state.ipsets.contains(&set) {
                let _ = sh("ipset", &["destroy", &set]);
            }
        }
    }
    // 7. sysctls (ip_forward first: writing it resets every interface's switch).
    let mut sysctls: Vec<_> = state.sysctls.iter().collect();
    sysctls.sort_by_key(|(name, _)| !name.ends_with("ip_forward"));
    for (name, value) in sysctls {
        if sysctl_path(name).exists() {
            let _ = write_sysctl(name, value);
        }
    }
    if !problems.is_empty() {
        eprintln!("real node teardown: {}", problems.join("; "));
    }
    if !keep_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Puts back the rules `<family>-save` printed before the node started. A host that had no
/// rules at all printed nothing: then every table the node components filled is emptied.
fn restore_rules(family: &str, saved: &str) -> Result<()> {
    if !saved.trim().is_empty() {
        return sh_stdin(&format!("{family}-restore"), &[], saved);
    }
    let now = sh(&format!("{family}-save"), &[]).unwrap_or_default();
    for table in now.lines().filter_map(|l| l.strip_prefix('*')) {
        sh(family, &["-t", table, "-F"])?;
        sh(family, &["-t", table, "-X"])?;
    }
    Ok(())
}

fn processes_mentioning(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            if pid == std::process::id() as i32 {
                continue;
            }
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(needle) {
                out.push(pid);
            }
        }
    }
    out
}

/// Makes SIGINT and SIGTERM tear the node down before the process exits (a Ctrl-C or a CI
/// timeout would otherwise leave its containers running until the next start reaps them). Call
/// it first thing in `main`, before any thread exists: the signals are blocked in every thread
/// and taken by one that waits for them.
pub fn teardown_on_signal() {
    let set = crate::cluster::block_termination_signals();
    let _ = std::thread::Builder::new().name("node-teardown-on-signal".into()).spawn(move || {
        let mut signal = 0;
        // SAFETY: waiting for the signals blocked above.
        unsafe {
            libc::sigwait(&set, &mut signal);
        }
        eprintln!("signal {signal}: tearing the real node down");
        teardown(&run_dir(), false);
        std::process::exit(128 + signal);
    });
}

/// Tears down the real nodes of runs whose process is gone (killed test runs).
pub fn reap_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(RUN_PREFIX) {
            continue;
        }
        let owner: Option<i32> =
            std::fs::read_to_string(e.path().join("owner.pid")).ok().and_then(|s| s.trim().parse().ok());
        // SAFETY: signal 0 only checks that the process exists.
        let alive = owner.is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
        if !alive {
            eprintln!("real node: cleaning up after a run that did not stop ({name})");
            teardown(&e.path(), false);
        }
    }
}

/// CoreDNS as a pod in kube-system with the `k8s-app: kube-dns` label the platform's DNS
/// NetworkPolicy allows, behind the `kube-dns` Service at [`DNS_IP`]. It answers for
/// cluster.local only: there is no upstream resolver to forward to.
fn coredns_manifests() -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: coredns, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "system:coredns"}}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "system:coredns"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}}
subjects: [{{kind: ServiceAccount, name: coredns, namespace: kube-system}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: coredns, namespace: kube-system}}
data:
  Corefile: |
    .:53 {{
        errors
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {{
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }}
        cache 30
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: coredns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{k8s-app: kube-dns}}}}
  template:
    metadata: {{labels: {{k8s-app: kube-dns}}}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      containers:
      - name: coredns
        image: registry.k8s.io/coredns/coredns:v1.12.4
        imagePullPolicy: IfNotPresent
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {{name: dns, containerPort: 53, protocol: UDP}}
        - {{name: dns-tcp, containerPort: 53, protocol: TCP}}
        readinessProbe:
          httpGet: {{path: /ready, port: 8181}}
          periodSeconds: 2
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {{drop: [ALL], add: [NET_BIND_SERVICE]}}
        volumeMounts: [{{name: config, mountPath: /etc/coredns, readOnly: true}}]
      volumes: [{{name: config, configMap: {{name: coredns}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: kube-dns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  clusterIP: {DNS_IP}
  selector: {{k8s-app: kube-dns}}
  ports:
  - {{name: dns, port: 53, protocol: UDP}}
  - {{name: dns-tcp, port: 53, protocol: TCP}}
"#
    )
}
