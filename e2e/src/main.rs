//! `e2e-cluster`: runs the local real control plane until interrupted (used by `make demo`).
//!
//! `e2e-cluster up DIR [--real-node]` starts it with its files in DIR, installs the upstream
//! CRDs, writes `DIR/admin.kubeconfig` and `DIR/ready`, and keeps running until SIGINT or
//! SIGTERM. With `--real-node` the cluster has one real node (containerd, kubelet, ...) instead
//! of the kwok nodes, so pods really run and `kubectl logs`/`exec` work.

use std::path::PathBuf;
use std::process::ExitCode;

use clinic_operator_e2e::cluster::{self, ControlPlane, Options};
use clinic_operator_e2e::node::{self, RealNode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some("up"), Some(dir)) = (args.get(1).map(String::as_str), args.get(2)) else {
        eprintln!("usage: e2e-cluster up DIR [--real-node]");
        return ExitCode::FAILURE;
    };
    let real_node = args.iter().any(|a| a == "--real-node");
    let dir = PathBuf::from(dir);
    // SIGINT/SIGTERM are waited for below, so the control plane is always stopped in order.
    let set = cluster::block_termination_signals();
    let result = (|| -> anyhow::Result<(ControlPlane, Option<RealNode>)> {
        let bin = cluster::binaries()?;
        let options = if real_node {
            Options { nodes: 0, local_volumes: Some(node::local_volumes()), ..Options::default() }
        } else {
            Options::default()
        };
        let plane = ControlPlane::start_with(&bin, &dir, options)?;
        plane.install_crds(&cluster::upstream_crds()?)?;
        let node = if real_node { Some(RealNode::start(&plane)?) } else { None };
        Ok((plane, node))
    })();
    let (mut plane, mut node) = match result {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let _ = std::fs::write(dir.join("pid"), std::process::id().to_string());
    let _ = std::fs::write(dir.join("ready"), plane.kubeconfig.display().to_string());
    eprintln!("control plane up: KUBECONFIG={}", plane.kubeconfig.display());
    // SAFETY: waiting for the signals blocked above.
    unsafe {
        let mut signal = 0;
        libc::sigwait(&set, &mut signal);
    }
    eprintln!("stopping control plane");
    if let Some(node) = node.as_mut() {
        node.stop();
    }
    plane.stop();
    ExitCode::SUCCESS
}
