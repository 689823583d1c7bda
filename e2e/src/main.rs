//! `e2e-cluster`: runs the local real control plane until interrupted (used by `make demo`).
//!
//! `e2e-cluster up DIR` starts it with its files in DIR, installs the upstream CRDs, writes
//! `DIR/admin.kubeconfig` and `DIR/ready`, and keeps running until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clinic_operator_e2e::cluster::{self, ControlPlane};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some("up"), Some(dir)) = (args.get(1).map(String::as_str), args.get(2)) else {
        eprintln!("usage: e2e-cluster up DIR");
        return ExitCode::FAILURE;
    };
    let dir = PathBuf::from(dir);
    // Block SIGINT/SIGTERM in every thread (threads inherit the mask) and wait for them below,
    // so the control plane is always stopped in order.
    // SAFETY: plain signal-mask calls before any thread is spawned.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let result = (|| -> anyhow::Result<ControlPlane> {
        let bin = cluster::binaries()?;
        let plane = ControlPlane::start_in(&bin, &dir)?;
        plane.install_crds(&cluster::upstream_crds()?)?;
        Ok(plane)
    })();
    let mut plane = match result {
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
    plane.stop();
    ExitCode::SUCCESS
}
