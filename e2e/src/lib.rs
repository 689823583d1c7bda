//! The real-control-plane harness of clinic-operator's end-to-end tests and `make demo`.

pub mod cluster;
pub mod node;
pub mod operator;
pub mod pki;
pub mod provisioner;

use std::path::PathBuf;

pub use cluster::ControlPlane;

/// The repository root (this crate lives in `<root>/e2e`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
