//! Resume: a restarted operator's first pass over a clinic that nothing changed while no
//! operator ran. Such a clinic was `Ready` at its current generation; the ledger vouches for
//! every child as cached now; its workloads run their declared images with every pod ready and
//! up to date; its generated Secrets exist; its namespace carries the Pod Security labels it
//! should; and the ledger holds a clean check of its uncached
//! objects (the Velero Schedule, the monitors...) for this very spec, policy and operator
//! version. Nothing the caches show differs from what was verified and published, so the pass
//! stops there, reading and writing nothing, and the full pass (the uncached objects, the
//! backups, the status) follows within one [`UNCACHED_RECHECK`], each clinic at its own moment
//! in it.
//!
//! Why: without it a restart of an operator of N clinics asked the API server for 5 N objects
//! in its first seconds (four uncached objects and a Backup list per clinic), while its own
//! lists loaded it, and each first pass waited on them. Spread over the minute they are read
//! at the pace of the steady state, and a change made to them while no operator ran is put
//! back within that minute, as one made while it runs is.

use std::time::Duration;

use kube::ResourceExt;
use kube::api::DynamicObject;
use tracing::debug;

use super::caches::is_workload;
use super::context::Context;
use super::converge;
use super::ledger;
use super::memory::{self, ClinicKey, UNCACHED_RECHECK};
use super::publish;
use super::status::{DEGRADED, READY};
use crate::api::{ClinicPlatform, ClinicPlatformStatus};
use crate::desired::{self, SecretValues};
use crate::model::Clinic;

/// When the full pass over `clinic` is due, if this first pass may stop here (see the module).
pub fn deferred(ctx: &Context, cp: &ClinicPlatform, clinic: &Clinic) -> Option<Duration> {
    let key: ClinicKey = (clinic.namespace.clone(), clinic.name.clone());
    // Cheapest tests first. A clinic this process has checked takes the full pass.
    if ctx.memory.uncached_checked_for(&key).is_some() || clinic.spec.paused {
        return None;
    }
    // A replicated database is read on every pass (no watch covers it).
    if clinic.database_cluster.is_some() {
        return None;
    }
    let status = cp.status.as_ref()?;
    if !settled(status, cp.metadata.generation) {
        return None;
    }
    let version = ledger::uncached_version(&memory::user_version(&cp.metadata), &ctx.policy);
    if ctx.ledger.uncached_version_of(&key)? != version {
        return None;
    }
    let desired = desired::objects(clinic, &SecretValues::Placeholder);
    let secrets_exist = desired::secrets::generated(clinic)
        .iter()
        .all(|s| ctx.caches.secret(&clinic.namespace, &s.name).is_some());
    let workloads_settled = desired
        .iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| is_workload(&t.kind)))
        .all(|o| runs_as_declared(ctx, &clinic.namespace, o));
    let settled_here = secrets_exist && workloads_settled && converge::pod_security_in_place(ctx, clinic);
    // Last: it remembers the children as verified, which ends any later first pass.
    if !(settled_here && converge::vouched_for_by_ledger(ctx, clinic, &desired)) {
        return None;
    }
    publish::clinic_metrics(ctx, clinic, status);
    let full_pass_in = spread();
    debug!(?full_pass_in, "nothing changed while no operator ran: the full pass follows");
    Some(full_pass_in)
}

/// `Ready` about the current generation, and not `Degraded` (about any).
fn settled(status: &ClinicPlatformStatus, generation: Option<i64>) -> bool {
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True" && c.observed_generation == generation);
    let degraded = status.conditions.iter().any(|c| c.type_ == DEGRADED && c.status == "True");
    status.observed_generation == generation && ready && !degraded
}

/// The cached workload runs the images `desired` declares, with every pod ready and updated,
/// its controller having seen its newest spec. (An upgrade held by the gate declares other
/// images than the spec's: it takes the full pass.)
fn runs_as_declared(ctx: &Context, namespace: &str, desired: &DynamicObject) -> bool {
    let kind = desired.types.as_ref().map(|t| t.kind.as_str()).unwrap_or_default();
    let Some(live) = ctx.caches.workload(kind, namespace, &desired.name_any()) else {
        return false;
    };
    let declared = crate::reconcile::caches::ChildRecord::of(desired).workload;
    live.current
        && live.ready >= live.desired
        && live.updated >= live.desired
        && declared.is_some_and(|d| d.images == live.images)
}

/// A random moment between one second and [`UNCACHED_RECHECK`] from now, so that the fleet's
/// full passes are spread evenly over it.
fn spread() -> Duration {
    Duration::from_millis(rand::random_range(1_000..UNCACHED_RECHECK.as_millis() as u64))
}
