//! What this process remembers between passes: per child, the marker it was last verified
//! with; per clinic, its backoff, the last check of the objects the caches do not hold, its
//! last Backup list and when its status was last written. A restart forgets it all but what
//! the [`super::ledger`] keeps: children whose markers moved since are read once (and written
//! only if they differ).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::backups::BackupRecord;
use super::caches::Marker;
use super::uncached::Uncached;

/// A clinic by namespace and name.
pub type ClinicKey = (String, String);

/// A child by kind, namespace and name.
pub type ChildKey = (String, String, String);

/// How long what was read of the objects the children's caches do not hold (Certificate,
/// HTTPRoutes, a dashboard in another namespace...) is reused while the ClinicPlatform is
/// unchanged: drift on them is put back within this time. Where they are watched (the
/// Prometheus Operator's kinds, the Velero Schedule and Backups) a change is seen at once, and
/// the check re-reads only what moved.
pub const UNCACHED_RECHECK: Duration = Duration::from_secs(60);

/// A status change that only reports progress (see [`super::status::may_coalesce`]) waits this
/// long after the previous status write, so a converging clinic is written about once per phase
/// rather than on every pod event; the fleet bench measured ~4.5 status writes a clinic with
/// 15 s. A change of phase (`Ready`, `Degraded`, the generation...) is written at once.
pub const STATUS_COALESCE: Duration = Duration::from_secs(30);

/// The version of a ClinicPlatform as its users change it: its uid, generation (the spec),
/// labels and annotations. Not its resourceVersion: the operator's own status writes move that,
/// and keyed by it every status write made the next pass read the uncached objects again (five
/// reads and a Backup list per write, most of a converging fleet's reads).
pub fn user_version(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}:{}:{}",
        meta.uid.as_deref().unwrap_or_default(),
        meta.generation.unwrap_or_default(),
        crate::desired::hash_of(&(&meta.labels, &meta.annotations))
    )
}

/// Something learnt about a clinic: for which version of its ClinicPlatform, and when.
#[derive(Debug)]
struct Remembered<T> {
    version: Option<String>,
    at: Instant,
    value: T,
}

impl<T: Clone> Remembered<T> {
    fn new(version: Option<&String>, value: T) -> Self {
        Self { version: version.cloned(), at: Instant::now(), value }
    }

    /// Learnt for this very [`user_version`] of the ClinicPlatform (any change to its spec, even
    /// an annotation, looks again), less than [`UNCACHED_RECHECK`] ago.
    fn fresh_for(&self, version: Option<&String>) -> bool {
        self.version.as_ref() == version && self.at.elapsed() < UNCACHED_RECHECK
    }

    fn fresh_value(slot: &Option<Self>, version: Option<&String>) -> Option<T> {
        slot.as_ref().filter(|seen| seen.fresh_for(version)).map(|seen| seen.value.clone())
    }
}

/// Everything remembered about one clinic; [`Memory::forget_clinic`] drops it at once.
#[derive(Debug, Default)]
struct ClinicMemory {
    /// Failed passes in a row, for the backoff.
    failures: u32,
    uncached: Option<Remembered<Uncached>>,
    backups: Option<Remembered<Vec<BackupRecord>>>,
    status_written: Option<Instant>,
    /// The [`user_version`] of the ClinicPlatform whose CRD CEL rules last passed: they read
    /// only what that version covers, and evaluating them (regular expressions compiled anew
    /// each time) was 5.6 % of a converging operator's CPU.
    cel_passed: Option<String>,
}

/// A child as [`Memory`] keys it: hashes of its namespace, and of its kind and name. Three
/// strings per child held 3.6 MiB at a thousand clinics; two numbers hold a sixth of that.
type ChildHash = (u64, u64);

#[derive(Debug, Default)]
pub struct Memory {
    /// Children known to match their declaration, with the [`super::caches::marker`] they had
    /// then. An unchanged marker needs no read; a moved one is read and compared (drift, or a
    /// controller's harmless change).
    children: Mutex<HashMap<ChildHash, Marker>>,
    /// Keys of this process only, so that nobody can choose names whose hashes collide.
    child_hasher: RandomState,
    clinics: Mutex<HashMap<ClinicKey, ClinicMemory>>,
}

impl Memory {
    fn children(&self) -> std::sync::MutexGuard<'_, HashMap<ChildHash, Marker>> {
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn namespace_hash(&self, namespace: &str) -> u64 {
        self.child_hasher.hash_one(namespace)
    }

    fn child_hash(&self, (kind, namespace, name): &ChildKey) -> ChildHash {
        (self.namespace_hash(namespace), self.child_hasher.hash_one((kind, name)))
    }

    fn with_clinic<R>(&self, key: &ClinicKey, f: impl FnOnce(&mut ClinicMemory) -> R) -> R {
        let mut clinics = self.clinics.lock().unwrap_or_else(|p| p.into_inner());
        f(clinics.entry(key.clone()).or_default())
    }

    /// Whether the child was verified with this marker.
    pub fn is_verified(&self, key: &ChildKey, marker: Marker) -> bool {
        let key = self.child_hash(key);
        self.children().get(&key).is_some_and(|m| *m == marker)
    }

    /// The marker the child was last verified with, if any.
    pub fn verified_marker(&self, key: &ChildKey) -> Option<Marker> {
        let key = self.child_hash(key);
        self.children().get(&key).copied()
    }

    /// Whether this process wrote or verified the child (with any marker) and has not let it
    /// go since: a remembered child that is gone was deleted by someone else.
    pub fn remembers(&self, key: &ChildKey) -> bool {
        let key = self.child_hash(key);
        self.children().contains_key(&key)
    }

    pub fn set_verified(&self, key: ChildKey, marker: Marker) {
        let key = self.child_hash(&key);
        self.children().insert(key, marker);
    }

    pub fn forget_verified(&self, key: &ChildKey) {
        let key = self.child_hash(key);
        self.children().remove(&key);
    }

    /// Drops everything about a deleted clinic, and the markers of its namespace's children
    /// (another clinic of that namespace only pays one read per child for it).
    pub fn forget_clinic(&self, key: &ClinicKey) {
        let namespace = self.namespace_hash(&key.0);
        self.children().retain(|(child_namespace, _), _| *child_namespace != namespace);
        self.clinics.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// The last check of the clinic's uncached objects, if it is fresh for this version of the
    /// ClinicPlatform and found nothing wrong.
    pub fn recent_uncached(&self, key: &ClinicKey, version: Option<&String>) -> Option<Uncached> {
        self.with_clinic(key, |m| Remembered::fresh_value(&m.uncached, version).filter(Uncached::is_clean))
    }

    /// For which version of the ClinicPlatform the clinic's uncached objects were last checked
    /// and found as wanted (`None`: not since this process started or the clinic was forgotten,
    /// or that check failed somewhere).
    pub fn uncached_checked_for(&self, key: &ClinicKey) -> Option<Option<String>> {
        self.with_clinic(key, |m| {
            m.uncached.as_ref().filter(|seen| seen.value.is_clean()).map(|seen| seen.version.clone())
        })
    }

    pub fn remember_uncached(&self, key: &ClinicKey, version: Option<&String>, state: &Uncached) {
        self.with_clinic(key, |m| m.uncached = Some(Remembered::new(version, state.clone())));
    }

    pub fn recent_backups(&self, key: &ClinicKey, version: Option<&String>) -> Option<Vec<BackupRecord>> {
        self.with_clinic(key, |m| Remembered::fresh_value(&m.backups, version))
    }

    pub fn remember_backups(&self, key: &ClinicKey, version: Option<&String>, list: &[BackupRecord]) {
        self.with_clinic(key, |m| {
            // A reused list keeps the time it was listed: it is never more than
            // UNCACHED_RECHECK old.
            if !m.backups.as_ref().is_some_and(|seen| seen.fresh_for(version)) {
                m.backups = Some(Remembered::new(version, list.to_vec()));
            }
        });
    }

    pub fn forget_backups(&self, key: &ClinicKey) {
        self.with_clinic(key, |m| m.backups = None);
    }

    /// Whether the CRD's CEL rules passed for this [`user_version`] of the ClinicPlatform.
    pub fn cel_passed(&self, key: &ClinicKey, version: &str) -> bool {
        self.with_clinic(key, |m| m.cel_passed.as_deref() == Some(version))
    }

    pub fn remember_cel_passed(&self, key: &ClinicKey, version: String) {
        self.with_clinic(key, |m| m.cel_passed = Some(version));
    }

    /// How long a coalescible status update should still wait, if at all.
    pub fn status_wait(&self, key: &ClinicKey) -> Option<Duration> {
        let since = self.with_clinic(key, |m| m.status_written)?.elapsed();
        STATUS_COALESCE.checked_sub(since).filter(|d| !d.is_zero())
    }

    pub fn status_was_written(&self, key: &ClinicKey) {
        self.with_clinic(key, |m| m.status_written = Some(Instant::now()));
    }

    /// Exponential backoff per clinic: 5 s, 10 s, 20 s ... capped at 5 minutes.
    pub fn next_backoff(&self, key: &ClinicKey) -> Duration {
        let n = self.with_clinic(key, |m| {
            m.failures = m.failures.saturating_add(1);
            m.failures
        });
        let seconds = 5u64.saturating_mul(1 << (n - 1).min(6));
        Duration::from_secs(seconds.min(300))
    }

    pub fn reset_backoff(&self, key: &ClinicKey) {
        self.with_clinic(key, |m| m.failures = 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cel_rules_passed_hold_for_that_version_of_that_clinic_only() {
        let memory = Memory::default();
        let (lyon, nice) = (("ns".to_string(), "lyon".to_string()), ("ns".to_string(), "nice".to_string()));
        assert!(!memory.cel_passed(&lyon, "uid:1:h"));
        memory.remember_cel_passed(&lyon, "uid:1:h".into());
        assert!(memory.cel_passed(&lyon, "uid:1:h"));
        assert!(!memory.cel_passed(&lyon, "uid:2:h"), "a new generation is checked again");
        assert!(!memory.cel_passed(&nice, "uid:1:h"));
        memory.forget_clinic(&lyon);
        assert!(!memory.cel_passed(&lyon, "uid:1:h"));
    }
}
