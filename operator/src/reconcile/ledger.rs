//! What a restart keeps of the [`super::memory`] of verified children: per clinic, a digest of
//! the [`Marker`]s its children had the last time every one of them was verified. A restarted
//! operator whose caches show the very same markers knows that nobody changed a child since,
//! and does not read them all again (at a thousand clinics: 24,000 reads, and a first pass of
//! up to a second each). A change made while no operator watched moves a marker: that clinic's
//! children are then all read and compared, as without a ledger.
//!
//! With it, for which version of the clinic (its ClinicPlatform as users change it, the
//! platform's policy, this operator's version) its uncached objects were last checked and found
//! clean: while that version stands, no child of an optional API it does not want can be left
//! over, and a restart reads only those it wants (in the fleet bench, where Istio's, the Vertical
//! Pod Autoscaler's, cert-manager's and Gateway API's are served: 17 reads a clinic fewer),
//! and the digest of the markers its watched uncached objects (the Prometheus Operator's, the
//! Schedule) had then: the same markers in the caches after a restart, and those are not read.
//!
//! It is one ConfigMap in the operator's own namespace, which tenants cannot write (the chart
//! gives them no rights there, and lets the operator write that one ConfigMap only): a forged
//! digest could hide a change. Written at most every [`FLUSH_INTERVAL`], and only when a
//! digest changed: a converged fleet's restart writes nothing.

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tracing::{debug, info, warn};

use super::caches::Marker;
use super::memory::ClinicKey;
use crate::api::FIELD_MANAGER;

/// The ConfigMap's name (`--verified-ledger`).
pub const DEFAULT_NAME: &str = "clinic-operator-verified";

/// How often changed digests are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// After this long, the entries of clinics this process has not reconciled once (deleted while
/// no operator ran) are dropped: every clinic is reconciled soon after a start, and again every
/// [`super::RESYNC`] at the latest.
const FORGET_UNSEEN_AFTER: Duration = super::RESYNC;

/// One clinic's entry: `<children digest> <uncached version> <watched digest>`, `-` for any
/// not known (an entry of an earlier build has no third field: its watched objects are read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entry {
    children: Option<String>,
    uncached: Option<String>,
    /// The digest of the markers of its watched uncached objects (the Prometheus Operator's,
    /// the Schedule) when that check was made.
    watched: Option<String>,
}

impl Entry {
    fn parse(text: &str) -> Self {
        let known = |s: Option<&str>| s.map(String::from).filter(|s| !s.is_empty() && s != "-");
        let mut fields = text.split(' ');
        Self { children: known(fields.next()), uncached: known(fields.next()), watched: known(fields.next()) }
    }

    fn text(&self) -> String {
        let shown = |field: &Option<String>| field.clone().unwrap_or_else(|| "-".into());
        format!("{} {} {}", shown(&self.children), shown(&self.uncached), shown(&self.watched))
    }
}

#[derive(Default)]
struct State {
    /// As last read from or written to the ConfigMap.
    stored: BTreeMap<String, Entry>,
    /// As this process knows them now.
    current: BTreeMap<String, Entry>,
    /// Clinics reconciled by this process (their entry is current, or was removed).
    seen: HashSet<String>,
}

pub struct Ledger {
    /// The ConfigMap; `None`: nothing is kept (tests, or `--verified-ledger ""`).
    target: Option<(Api<ConfigMap>, String)>,
    started: Instant,
    state: Mutex<State>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("configmap", &self.target.as_ref().map(|(_, name)| name))
            .field("clinics", &self.state().current.len())
            .finish()
    }
}

/// A clinic's entry in the ConfigMap: a namespace has no dot, so `<namespace>.<name>` is
/// unambiguous, and both are valid ConfigMap keys.
fn entry(key: &ClinicKey) -> String {
    format!("{}.{}", key.0, key.1)
}

/// The version an uncached check was made for: the ClinicPlatform's
/// [`super::memory::user_version`], the policy, and this operator's version (another may build
/// other children).
pub fn uncached_version(user_version: &str, policy: &crate::policy::Policy) -> String {
    crate::desired::hash_of(&(env!("CARGO_PKG_VERSION"), user_version, policy))
}

/// The digest of a clinic's children by kind, name and marker. The operator's version is in it:
/// an upgrade may compare children differently, so it reads them all once.
pub fn digest<'a>(children: impl IntoIterator<Item = (&'a str, &'a str, Marker)>) -> String {
    let mut children: Vec<_> = children.into_iter().collect();
    children.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    // Fixed keys, like the markers: the same input gives the same digest in any process of this
    // build. A digest from another build only ever differs (a read), never wrongly matches.
    let mut hasher = std::hash::DefaultHasher::new();
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    children.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

impl Ledger {
    /// A ledger that keeps nothing across restarts.
    pub fn disabled() -> Self {
        Self { target: None, started: Instant::now(), state: Mutex::new(State::default()) }
    }

    /// Reads the ledger `name` in `namespace`. Unreadable, it is empty (every child is read once,
    /// as without it) and said in the log.
    pub async fn load(client: Client, namespace: &str, name: &str) -> Self {
        let api: Api<ConfigMap> = Api::namespaced(client, namespace);
        let stored: BTreeMap<String, Entry> = match api.get_opt(name).await {
            Ok(found) => found
                .and_then(|cm| cm.data)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, Entry::parse(&v)))
                .collect(),
            Err(e) => {
                warn!(error = %e, %namespace, %name, "verified-children ledger unreadable; every child is read once");
                BTreeMap::new()
            }
        };
        info!(%namespace, %name, clinics = stored.len(), "verified-children ledger loaded");
        let state = State { current: stored.clone(), stored, seen: HashSet::new() };
        Self { target: Some((api, name.to_string())), started: Instant::now(), state: Mutex::new(state) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The digest the clinic's children had when last all verified, if it is known.
    pub fn digest_of(&self, key: &ClinicKey) -> Option<String> {
        self.state().current.get(&entry(key))?.children.clone()
    }

    /// The version of the clinic its uncached objects were last checked clean for.
    pub fn uncached_version_of(&self, key: &ClinicKey) -> Option<String> {
        self.state().current.get(&entry(key))?.uncached.clone()
    }

    /// Changes the clinic's entry; an entry left with nothing known is removed.
    fn update(&self, key: &ClinicKey, change: impl FnOnce(&mut Entry)) {
        let entry = entry(key);
        let mut state = self.state();
        let mut value = state.current.remove(&entry).unwrap_or_default();
        change(&mut value);
        if value != Entry::default() {
            state.current.insert(entry.clone(), value);
        }
        state.seen.insert(entry);
    }

    /// Records the digest of the clinic's children, all verified now (`None`: some are not).
    pub fn record(&self, key: &ClinicKey, digest: Option<String>) {
        self.update(key, |e| e.children = digest);
    }

    /// The digest of the clinic's watched uncached objects' markers at that check.
    pub fn watched_digest_of(&self, key: &ClinicKey) -> Option<String> {
        self.state().current.get(&entry(key))?.watched.clone()
    }

    /// Records that the clinic's uncached objects were checked clean for `version`, the watched
    /// ones with markers of digest `watched` (`None`: not all verified).
    pub fn record_uncached(&self, key: &ClinicKey, version: String, watched: Option<String>) {
        self.update(key, |e| {
            e.uncached = Some(version);
            e.watched = watched;
        });
    }

    /// Drops the clinic's entry (deleted).
    pub fn forget(&self, key: &ClinicKey) {
        self.update(key, |e| *e = Entry::default());
    }

    /// Writes the ConfigMap if an entry changed. The entries of clinics not reconciled since the
    /// start go once [`FORGET_UNSEEN_AFTER`] has passed.
    pub async fn flush(&self, metrics: &crate::metrics::Metrics) -> Result<(), kube::Error> {
        let Some((api, name)) = &self.target else {
            return Ok(());
        };
        let data = {
            let mut state = self.state();
            if self.started.elapsed() > FORGET_UNSEEN_AFTER {
                let State { current, seen, .. } = &mut *state;
                current.retain(|entry, _| seen.contains(entry));
            }
            if state.current == state.stored {
                return Ok(());
            }
            state.current.clone()
        };
        let text: BTreeMap<&String, String> = data.iter().map(|(k, e)| (k, e.text())).collect();
        let body = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": name, "labels": { "app.kubernetes.io/part-of": "clinic-operator" } },
            "data": text,
        });
        metrics.record_write("ledger");
        api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
        debug!(clinics = data.len(), "verified-children ledger written");
        self.state().stored = data;
        Ok(())
    }

    /// Flushes every [`FLUSH_INTERVAL`] until `stop` resolves, then once more.
    pub async fn run(&self, metrics: &crate::metrics::Metrics, stop: impl std::future::Future<Output = ()>) {
        if self.target.is_none() {
            return;
        }
        let mut interval = tokio::time::interval(FLUSH_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        let mut failing = false;
        loop {
            let stopping = tokio::select! {
                _ = interval.tick() => false,
                () = &mut stop => true,
            };
            match self.flush(metrics).await {
                Ok(()) => failing = false,
                // Said once per run of failures: until it is written, a restart reads every child.
                Err(e) if !failing => {
                    warn!(error = %e, "verified-children ledger not written; a restart will read every child");
                    failing = true;
                }
                Err(e) => debug!(error = %e, "verified-children ledger not written"),
            }
            if stopping {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(n: u64) -> Marker {
        let meta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            resource_version: Some(n.to_string()),
            ..Default::default()
        };
        super::super::caches::marker("Service", &meta)
    }

    #[test]
    fn the_digest_follows_every_marker_and_not_the_order() {
        let a = digest([("Service", "a", marker(1)), ("ConfigMap", "b", marker(2))]);
        assert_eq!(a, digest([("ConfigMap", "b", marker(2)), ("Service", "a", marker(1))]));
        assert_ne!(a, digest([("Service", "a", marker(3)), ("ConfigMap", "b", marker(2))]), "a moved marker");
        assert_ne!(a, digest([("Service", "a", marker(1))]), "a child fewer");
        assert_ne!(a, digest([("Service", "c", marker(1)), ("ConfigMap", "b", marker(2))]), "another name");
    }

    #[test]
    fn entries_are_recorded_and_forgotten_per_clinic() {
        let ledger = Ledger::disabled();
        let lyon = ("clinic-lyon".to_string(), "lyon".to_string());
        assert_eq!(ledger.digest_of(&lyon), None);
        ledger.record(&lyon, Some("d1".into()));
        ledger.record_uncached(&lyon, "v1".into(), Some("w1".into()));
        assert_eq!(ledger.digest_of(&lyon).as_deref(), Some("d1"));
        assert_eq!(ledger.uncached_version_of(&lyon).as_deref(), Some("v1"));
        assert_eq!(ledger.watched_digest_of(&lyon).as_deref(), Some("w1"));
        assert_eq!(ledger.digest_of(&("clinic-lyon".into(), "other".into())), None);
        ledger.record(&lyon, None);
        assert_eq!(ledger.digest_of(&lyon), None, "a child not verified");
        assert_eq!(ledger.uncached_version_of(&lyon).as_deref(), Some("v1"), "kept");
        ledger.forget(&lyon);
        assert_eq!(ledger.uncached_version_of(&lyon), None);
        assert!(ledger.state().current.is_empty(), "no empty entry is kept");
    }

    #[test]
    fn an_entry_reads_back_as_written() {
        let entry = |c: Option<&str>, u: Option<&str>, w: Option<&str>| Entry {
            children: c.map(String::from),
            uncached: u.map(String::from),
            watched: w.map(String::from),
        };
        for written in [
            entry(Some("0123abcd"), Some("ffee"), Some("77aa")),
            entry(None, Some("ffee"), None),
            entry(Some("0123abcd"), None, None),
            entry(None, Some("ffee"), Some("77aa")),
        ] {
            assert_eq!(Entry::parse(&written.text()), written);
        }
        assert_eq!(Entry::parse("0123abcd"), entry(Some("0123abcd"), None, None));
        assert_eq!(
            Entry::parse("0123abcd ffee"),
            entry(Some("0123abcd"), Some("ffee"), None),
            "an earlier build's"
        );
    }
}
