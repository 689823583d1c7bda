//! What every reconcile shares: the client, the caches, the event recorder, the metrics, the
//! platform's policy, discovery, and this process's memory and what a restart keeps of it.

use std::sync::Arc;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use super::caches::Caches;
use super::discovery::Discovery;
use super::ledger::Ledger;
use super::memory::Memory;
use super::storage::StorageClassCache;
use crate::api::FIELD_MANAGER;
use crate::metrics::Metrics;
use crate::policy::Policy;

pub struct Context {
    pub client: Client,
    pub caches: Caches,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// The platform team's policy: what clinics may point at, what counts as compliant.
    pub policy: Arc<Policy>,
    /// Whether the operator sees cluster-scoped objects (namespaces, StorageClasses); false in
    /// namespaced mode.
    pub cluster_scope: bool,
    pub discovery: Discovery,
    pub storage_classes: StorageClassCache,
    pub memory: Memory,
    /// What a restart keeps of `memory`.
    pub ledger: Arc<Ledger>,
    /// What the operator's own probes of the clinics found (the policy's `clinicProbe`).
    pub probes: super::probe::Probes,
}

impl Context {
    pub fn new(client: Client, caches: Caches, metrics: Arc<Metrics>, instance: Option<String>) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            discovery: Discovery::new(client.clone()),
            client,
            caches,
            metrics,
            policy: Arc::new(Policy::default()),
            cluster_scope: true,
            storage_classes: StorageClassCache::default(),
            memory: Memory::default(),
            ledger: Arc::new(Ledger::disabled()),
            probes: super::probe::Probes::default(),
        }
    }

    /// The same context keeping its verified children in `ledger` across restarts.
    pub fn with_ledger(mut self, ledger: Arc<Ledger>) -> Self {
        self.ledger = ledger;
        self
    }

    /// The same context under another policy.
    pub fn with_policy(mut self, policy: Arc<Policy>) -> Self {
        self.policy = policy;
        self
    }
}
