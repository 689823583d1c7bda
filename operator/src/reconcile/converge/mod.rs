//! Converge: bring everything in the clinic's namespace to its declaration. The namespace's
//! Pod Security labels first, the generated Secrets next (the workloads reference them), then
//! every other child, then prune what the clinic owns and no longer wants.

mod children;
mod namespace;
mod secrets;

pub use children::{Applied, DESIRED_HASH_ANNOTATION, declared, vouched_for_by_ledger};
pub use namespace::{enforces_restricted, pod_security_in_place, pod_security_labels};

use kube::api::DynamicObject;

use super::context::Context;
use super::error::Result;
use super::events::Notice;
use super::gate::Gate;
use crate::api::ClinicPlatform;
use crate::model::Clinic;

/// What the writing phases came to: the gate's verdict and what converging the children did,
/// or the first error of either (the gate's first).
pub type Outcome = Result<(Applied, Gate)>;

/// Joins the gate's verdict with the convergence.
pub fn outcome(gate: Result<Gate>, applied: Result<Applied>) -> Outcome {
    let gate = gate?;
    applied.map(|applied| (applied, gate))
}

/// Converges the clinic's namespace, unless the clinic is paused or its credentials source
/// moved away from what the database was initialised with. A gate that could not decide has
/// already held the images: everything else is still converged and drift still corrected.
pub async fn converge(
    ctx: &Context,
    cp: &ClinicPlatform,
    clinic: &Clinic,
    desired: &[DynamicObject],
    notices: &mut Vec<Notice>,
) -> Result<Applied> {
    if clinic.spec.paused {
        return Ok(Applied::default());
    }
    secrets::credentials_source_unchanged(ctx, cp, clinic)?;
    namespace::ensure_pod_security(ctx, clinic).await?;
    let encryption_recorded = cp.status.as_ref().and_then(|s| s.database_encryption_secret.as_deref());
    let created_secrets = secrets::ensure_secrets(ctx, clinic, encryption_recorded).await?;
    let mut applied = children::apply_children(ctx, clinic, desired, notices).await?;
    applied.created += created_secrets;
    applied.pruned = children::prune(ctx, clinic, desired, notices).await?;
    // One event per kind of change and pass, not one per object.
    if applied.created > 0 {
        notices.push(Notice::normal("Created", format!("created {} objects", applied.created)));
    }
    if applied.updated > 0 {
        notices
            .push(Notice::normal("Updated", format!("updated {} objects to the new spec", applied.updated)));
    }
    Ok(applied)
}
