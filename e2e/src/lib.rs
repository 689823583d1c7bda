//! The real-control-plane harness of clinic-operator's end-to-end tests and `make demo`.

pub mod cluster;
pub mod node;
pub mod operator;
pub mod pki;
pub mod provisioner;

use std::path::PathBuf;

pub use cluster::ControlPlane;

/// The repository root (this crate lives in `<root>/e2e`). `cargo test` and `cargo run` name
/// the crate's directory when they start a binary; that one wins over the directory it was
/// compiled in, because cargo reuses a build from another checkout of the same sources in a
/// shared target directory without rebuilding it.
pub fn workspace_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.join("Cargo.toml").is_file())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
