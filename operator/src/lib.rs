//! clinic-operator: runs OpenMRS 3 platforms for clinics on Kubernetes.
//!
//! Pipeline of one reconcile: observe -> [`model::validate`] -> [`desired::desired`] (pure) ->
//! apply (server-side apply) -> prune -> status. See `docs/architecture.md`.

pub mod api;
pub mod desired;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod reconcile;
pub mod render;
pub mod server;
