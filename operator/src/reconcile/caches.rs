//! What the reconciler reads: caches of every child kind, filled by watches that also trigger
//! reconciles when a child changes or disappears.
//!
//! Only objects labelled `app.kubernetes.io/managed-by=clinic-operator` are watched. A child is
//! kept as a [`ChildRecord`] — its marker, declared hash, owner and, for workloads, what status
//! reads — not as an object: at a thousand clinics their metadata alone held 66.0 MiB, the
//! records 5.9 MiB (`cargo bench --bench cache_memory`). Secrets are watched as metadata only
//! and kept as a [`SecretRecord`]: the operator never holds a password in memory after creating
//! it.
//!
//! Children of optional APIs that every monitored or backed-up clinic has (the Prometheus
//! Operator's ServiceMonitor, PrometheusRule and AlertmanagerConfig, Velero's Schedule) are
//! watched too, and Velero's Backups kept as [`BackupEntry`]s: their APIs may be absent, or
//! come and go, so each of these caches says whether it is in step with the API server, and
//! while it is not, the object is read instead ([`Caches::watched`], [`Caches::backups_of`]).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::watcher::Event;
use serde_json::Value;

use super::backups::BackupRecord;
use super::converge::DESIRED_HASH_ANNOTATION;
use crate::desired::backup::CLINIC_NAMESPACE_LABEL;
use crate::model::MANAGED_BY;

/// Label selector of everything the operator manages.
pub fn managed_selector() -> String {
    format!("app.kubernetes.io/managed-by={MANAGED_BY}")
}

/// The kinds the operator creates (besides Secrets), in the order status reads them.
pub fn child_kinds() -> Vec<ApiResource> {
    vec![
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<StatefulSet>(&()),
        ApiResource::erase::<Deployment>(&()),
        ApiResource::erase::<NetworkPolicy>(&()),
        ApiResource::erase::<HorizontalPodAutoscaler>(&()),
        ApiResource::erase::<PodDisruptionBudget>(&()),
        ApiResource::erase::<Ingress>(&()),
    ]
}

/// The kinds of optional APIs whose children are cached while the API is served: the
/// Prometheus Operator's, which every clinic with monitoring has (Velero's Schedule is cached
/// per Velero namespace, [`Caches::new_for`]). The children of the other optional APIs
/// (cert-manager, Gateway API, Istio, the Vertical Pod Autoscaler, the mariadb-operator) are
/// read at each check of the uncached objects.
pub fn watched_optional_kinds() -> Vec<ApiResource> {
    use crate::desired::monitoring::{
        alertmanager_config_resource, prometheus_rule_resource, service_monitor_resource,
    };
    vec![service_monitor_resource(), prometheus_rule_resource(), alertmanager_config_resource()]
}

/// Whether the kind is watched whole (its status and images are read), not as metadata.
pub fn is_workload(kind: &str) -> bool {
    matches!(kind, "StatefulSet" | "Deployment")
}

/// A fingerprint of a child's state as the cache sees it; equal markers mean nobody changed
/// what the operator declares. Where controllers write status (workloads, autoscalers, budgets)
/// the resourceVersion moves on every status update, so the spec is followed by
/// `metadata.generation`, and labels, annotations, owners and the uid with it (an object
/// deleted and made again starts at generation 1 again: only its uid tells it from the one
/// verified). Velero's Schedule (its status at every backup) and the Prometheus Operator's
/// kinds (a status on newer versions) are followed the same way. The API server gives
/// HorizontalPodAutoscalers no generation (seen on v1.34): theirs is followed by who last wrote
/// which fields of the object itself, its `managedFields` entries other than the `status`
/// subresource's. Elsewhere any change, a new object included, moves the resourceVersion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Marker(u64);

/// Annotations a controller writes on what the operator declares, for its own bookkeeping: a
/// Deployment's revision (one more read of each new Deployment otherwise, for nothing).
const CONTROLLER_ANNOTATIONS: [&str; 1] = ["deployment.kubernetes.io/revision"];

/// Whether the [`marker`] of `kind` reads the object's `managedFields` (watches strip them
/// from everything else).
pub fn marker_reads_managed_fields(kind: &str) -> bool {
    kind == "HorizontalPodAutoscaler"
}

/// The [`Marker`] of a child of `kind` with this metadata.
pub fn marker(kind: &str, meta: &ObjectMeta) -> Marker {
    // SipHash with fixed keys: the same input gives the same marker for the process's life,
    // which is as long as a marker is remembered.
    let mut hasher = std::hash::DefaultHasher::new();
    let generation = meta.generation.filter(|g| *g > 0);
    let identity = |hasher: &mut std::hash::DefaultHasher| {
        meta.uid.hash(hasher);
        meta.labels.hash(hasher);
        for (key, value) in meta.annotations.iter().flatten() {
            if !CONTROLLER_ANNOTATIONS.contains(&key.as_str()) {
                (key, value).hash(hasher);
            }
        }
        for owner in meta.owner_references.iter().flatten() {
            (&owner.uid, &owner.kind, &owner.name, owner.controller, owner.block_owner_deletion).hash(hasher);
        }
    };
    match (kind, generation, &meta.managed_fields) {
        (
            "StatefulSet"
            | "Deployment"
            | "HorizontalPodAutoscaler"
            | "PodDisruptionBudget"
            | "Schedule"
            | "ServiceMonitor"
            | "PrometheusRule"
            | "AlertmanagerConfig",
            Some(g),
            _,
        ) => {
            'g'.hash(&mut hasher);
            g.hash(&mut hasher);
            identity(&mut hasher);
        }
        (kind, None, Some(entries)) if marker_reads_managed_fields(kind) => {
            'm'.hash(&mut hasher);
            identity(&mut hasher);
            for entry in entries.iter().filter(|e| e.subresource.as_deref().unwrap_or_default() != "status") {
                (&entry.manager, &entry.operation, &entry.api_version, &entry.subresource).hash(&mut hasher);
                entry.time.as_ref().map(|t| t.0).hash(&mut hasher);
                // Two writes by one manager in the same second differ by the fields they own.
                if let Some(fields) = &entry.fields_v1 {
                    hash_json(&fields.0, &mut hasher);
                }
            }
        }
        _ => {
            'r'.hash(&mut hasher);
            meta.resource_version.hash(&mut hasher);
        }
    }
    Marker(hasher.finish())
}

/// Hashes a JSON value (serde_json's `Value` has no `Hash`): objects by their keys in order.
fn hash_json(value: &Value, hasher: &mut impl Hasher) {
    std::mem::discriminant(value).hash(hasher);
    match value {
        Value::Null => {}
        Value::Bool(b) => b.hash(hasher),
        Value::Number(n) => n.to_string().hash(hasher),
        Value::String(s) => s.hash(hasher),
        Value::Array(items) => {
            items.len().hash(hasher);
            items.iter().for_each(|item| hash_json(item, hasher));
        }
        Value::Object(map) => {
            map.len().hash(hasher);
            for (key, item) in map {
                key.hash(hasher);
                hash_json(item, hasher);
            }
        }
    }
}

/// What the caches keep of one child: what drift detection, prune and status need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildRecord {
    pub marker: Marker,
    /// The operator's [`DESIRED_HASH_ANNOTATION`] on it, if any.
    pub declared_hash: Option<Box<str>>,
    /// The uid of its controlling owner (its ClinicPlatform), if any.
    pub owner_uid: Option<Box<str>>,
    /// For StatefulSets and Deployments.
    pub workload: Option<Box<WorkloadRecord>>,
}

/// What status and the upgrade gate read of a StatefulSet or Deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadRecord {
    /// `spec.replicas` (1 when unset).
    pub desired: i32,
    /// Pods its controller has created (`status.replicas`).
    pub created: i32,
    /// Ready pods (a StatefulSet's `readyReplicas`, a Deployment's `availableReplicas`).
    pub ready: i32,
    pub updated: i32,
    /// Its controller has seen the newest spec (`observedGeneration` ≥ `generation`).
    pub current: bool,
    /// A Deployment's `ReplicaFailure` message.
    pub failure: Option<Box<str>>,
    /// Container name and image of the pod template, in order.
    pub images: Vec<(Box<str>, Box<str>)>,
}

impl WorkloadRecord {
    fn of(kind: &str, meta: &ObjectMeta, data: &Value) -> Self {
        let count = |v: &Value| v.as_i64().and_then(|n| i32::try_from(n).ok());
        let status = &data["status"];
        let ready_field = if kind == "Deployment" { "availableReplicas" } else { "readyReplicas" };
        let images = data["spec"]["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| Some((c["name"].as_str()?.into(), c["image"].as_str()?.into())))
            .collect();
        let failure = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "ReplicaFailure" && c["status"] == "True")
            .map(|c| c["message"].as_str().or(c["reason"].as_str()).unwrap_or_default().into());
        Self {
            desired: count(&data["spec"]["replicas"]).unwrap_or(1),
            created: count(&status["replicas"]).unwrap_or(0),
            ready: count(&status[ready_field]).unwrap_or(0),
            updated: count(&status["updatedReplicas"]).unwrap_or(0),
            current: status["observedGeneration"].as_i64().unwrap_or(0) >= meta.generation.unwrap_or(0),
            failure,
            images,
        }
    }

    /// The image of the template's container `name`.
    pub fn image(&self, name: &str) -> Option<&str> {
        self.images.iter().find(|(container, _)| &**container == name).map(|(_, image)| &**image)
    }
}

impl ChildRecord {
    /// The record of a child as a watch delivers it (`types` set; a body only for workloads).
    pub fn of(object: &DynamicObject) -> Self {
        let kind = object.types.as_ref().map(|t| t.kind.as_str()).unwrap_or_default();
        let meta = &object.metadata;
        let owner_uid = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.as_str().into());
        Self {
            marker: marker(kind, meta),
            declared_hash: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(DESIRED_HASH_ANNOTATION))
                .map(|h| h.as_str().into()),
            owner_uid,
            workload: is_workload(kind).then(|| Box::new(WorkloadRecord::of(kind, meta, &object.data))),
        }
    }
}

/// What the caches keep of one Secret: what adoption and the certificates read. Never a value:
/// Secrets are watched as metadata only. At a thousand clinics their metadata held 11.6 MiB,
/// these records about a sixth of it (`cargo bench --bench cache_memory`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub resource_version: Box<str>,
    /// A hash of each label (key and value), sorted: adoption asks whether ours are all there.
    labels: Box<[u64]>,
    /// The uids of every owner, controller or not.
    pub owner_uids: Box<[Box<str>]>,
    /// The end of validity the operator wrote on a certificate it issued.
    pub not_after: Option<Box<str>>,
    /// The fingerprint of the CA, on the CA and on the certificates it signed.
    pub ca_fingerprint: Option<Box<str>>,
}

fn label_hash(key: &str, value: &str) -> u64 {
    // Fixed keys, like the markers: the same label gives the same hash for the process's life.
    let mut hasher = std::hash::DefaultHasher::new();
    (key, value).hash(&mut hasher);
    hasher.finish()
}

impl SecretRecord {
    /// The record of a Secret with this metadata (from the watch, or read).
    pub fn of(meta: &ObjectMeta) -> Self {
        let annotation = |key: &str| meta.annotations.as_ref()?.get(key).map(|v| v.as_str().into());
        let mut labels: Vec<u64> = meta.labels.iter().flatten().map(|(k, v)| label_hash(k, v)).collect();
        labels.sort_unstable();
        Self {
            resource_version: meta.resource_version.as_deref().unwrap_or_default().into(),
            labels: labels.into(),
            owner_uids: meta.owner_references.iter().flatten().map(|o| o.uid.as_str().into()).collect(),
            not_after: annotation(crate::desired::internal_tls::NOT_AFTER_ANNOTATION),
            ca_fingerprint: annotation(crate::desired::internal_tls::CA_FINGERPRINT_ANNOTATION),
        }
    }

    /// Whether it carries every one of `labels` with the same value.
    pub fn has_labels(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        labels.iter().all(|(k, v)| self.labels.binary_search(&label_hash(k, v)).is_ok())
    }
}

/// What the caches keep of one Velero Backup: whose it is (by its labels, as the Schedule's
/// template and the upgrade gate write them) and what backup health reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupEntry {
    clinic_namespace: Option<Box<str>>,
    clinic: Option<Box<str>>,
    pub record: BackupRecord,
}

impl BackupEntry {
    pub fn of(backup: &DynamicObject) -> Self {
        let label = |key: &str| backup.metadata.labels.as_ref()?.get(key).map(|v| v.as_str().into());
        Self {
            clinic_namespace: label(CLINIC_NAMESPACE_LABEL),
            clinic: label("app.kubernetes.io/instance"),
            record: BackupRecord::from_object(backup),
        }
    }

    fn is_of(&self, namespace: &str, name: &str) -> bool {
        self.clinic_namespace.as_deref() == Some(namespace) && self.clinic.as_deref() == Some(name)
    }
}

/// The records of one kind, by namespace then name (prune lists a namespace's).
struct RecordState<R> {
    namespaces: HashMap<Box<str>, HashMap<Box<str>, Slot<R>>>,
    /// Bumped by every (re)list: what a relist did not deliver again is gone.
    listing: u32,
}

struct Slot<R> {
    record: R,
    listing: u32,
}

/// The cache of one kind, shared by its writer (the watch) and the reconciles.
struct RecordStore<R> {
    state: RwLock<RecordState<R>>,
    ready: tokio::sync::watch::Sender<bool>,
}

impl<R> Default for RecordStore<R> {
    fn default() -> Self {
        Self {
            state: RwLock::new(RecordState { namespaces: HashMap::new(), listing: 0 }),
            ready: tokio::sync::watch::Sender::default(),
        }
    }
}

impl<R: Clone> RecordStore<R> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, RecordState<R>> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, RecordState<R>> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, namespace: &str, name: &str) -> Option<R> {
        self.read().namespaces.get(namespace)?.get(name).map(|slot| slot.record.clone())
    }

    async fn wait_ready(&self) {
        // An error only means the writer was dropped (shutdown): nothing to wait for then.
        let _ = self.ready.subscribe().wait_for(|ready| *ready).await;
    }

    fn in_step(&self) -> bool {
        *self.ready.borrow()
    }
}

/// Feeds one kind's cache from its watch events.
pub struct RecordWriter<R>(Arc<RecordStore<R>>);

/// The writer of a child kind's records.
pub type ChildWriter = RecordWriter<ChildRecord>;

/// The writer of the Secrets' records.
pub type SecretWriter = RecordWriter<SecretRecord>;

impl<R: Clone> RecordWriter<R> {
    /// Applies a watch event. A relist updates records in place and drops, when it is done,
    /// those it did not deliver again: the cache never holds two copies of the fleet.
    fn apply<K: kube::Resource>(&mut self, event: &Event<K>, record: impl Fn(&K) -> R) {
        let mut state = self.0.write();
        match event {
            Event::Init => state.listing = state.listing.wrapping_add(1),
            Event::InitApply(object) | Event::Apply(object) => {
                let meta = object.meta();
                let (Some(namespace), Some(name)) = (&meta.namespace, &meta.name) else {
                    return;
                };
                let listing = state.listing;
                let slot = Slot { record: record(object), listing };
                state
                    .namespaces
                    .entry(namespace.as_str().into())
                    .or_default()
                    .insert(name.as_str().into(), slot);
            }
            Event::Delete(object) => {
                let meta = object.meta();
                let (Some(namespace), Some(name)) = (&meta.namespace, &meta.name) else {
                    return;
                };
                if let Some(names) = state.namespaces.get_mut(namespace.as_str()) {
                    names.remove(name.as_str());
                    if names.is_empty() {
                        state.namespaces.remove(namespace.as_str());
                    }
                }
            }
            Event::InitDone => {
                let listing = state.listing;
                state.namespaces.retain(|_, names| {
                    names.retain(|_, slot| slot.listing == listing);
                    names.shrink_to_fit();
                    !names.is_empty()
                });
                state.namespaces.shrink_to_fit();
                drop(state);
                self.0.ready.send_replace(true);
            }
        }
    }
}

/// Feeds the cache of a kind whose API may be absent, or unreadable: in step with the API
/// server once a list is complete; out of step from a watch error (its API gone, a broken
/// connection) until a relist completes or the resumed watch delivers a change again.
pub struct OptionalWriter<R>(RecordWriter<R>);

impl<R: Clone> OptionalWriter<R> {
    fn apply<K: kube::Resource>(
        &mut self,
        result: &Result<Event<K>, kube::runtime::watcher::Error>,
        record: impl Fn(&K) -> R,
    ) {
        match result {
            Err(_) => {
                self.0.0.ready.send_replace(false);
            }
            Ok(event) => {
                self.0.apply(event, record);
                if matches!(event, Event::Apply(_) | Event::Delete(_)) {
                    self.0.0.ready.send_replace(true);
                }
            }
        }
    }
}

impl OptionalWriter<ChildRecord> {
    /// Applies a metadata watch's event or error (`types` set).
    pub fn apply_watcher_result(
        &mut self,
        result: &Result<Event<DynamicObject>, kube::runtime::watcher::Error>,
    ) {
        self.apply(result, ChildRecord::of);
    }
}

impl OptionalWriter<BackupEntry> {
    /// Applies a Backup watch's event or error.
    pub fn apply_watcher_result(
        &mut self,
        result: &Result<Event<DynamicObject>, kube::runtime::watcher::Error>,
    ) {
        self.apply(result, BackupEntry::of);
    }
}

impl RecordWriter<ChildRecord> {
    /// Applies a child watch's event (`types` set; a body only for workloads).
    pub fn apply_watcher_event(&mut self, event: &Event<DynamicObject>) {
        self.apply(event, ChildRecord::of);
    }
}

impl RecordWriter<SecretRecord> {
    /// Applies a Secret watch's event (metadata only).
    pub fn apply_watcher_event(&mut self, event: &Event<PartialObjectMeta<Secret>>) {
        self.apply(event, |secret| SecretRecord::of(&secret.metadata));
    }
}

/// Read side of the caches.
#[derive(Clone)]
pub struct Caches {
    children: Vec<(ApiResource, Arc<RecordStore<ChildRecord>>)>,
    secrets: Arc<RecordStore<SecretRecord>>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    ready: Arc<AtomicBool>,
    /// Children of [`watched_optional_kinds`], by kind.
    optional: Vec<(ApiResource, Arc<RecordStore<ChildRecord>>)>,
    velero: Vec<VeleroStores>,
}

/// Velero's Schedules and Backups of one namespace (`None`: all).
#[derive(Clone)]
struct VeleroStores {
    namespace: Option<Box<str>>,
    schedules: Arc<RecordStore<ChildRecord>>,
    backups: Arc<RecordStore<BackupEntry>>,
}

/// Write side, handed to the watch streams.
pub struct CacheWriters {
    pub children: Vec<(ApiResource, ChildWriter)>,
    pub secrets: SecretWriter,
    pub namespaces: Writer<PartialObjectMeta<Namespace>>,
    pub optional: Vec<(ApiResource, OptionalWriter<ChildRecord>)>,
    pub velero: Vec<VeleroWriters>,
}

/// The writers of one Velero namespace's caches (`namespace` `None`: all namespaces).
pub struct VeleroWriters {
    pub namespace: Option<String>,
    pub schedules: OptionalWriter<ChildRecord>,
    pub backups: OptionalWriter<BackupEntry>,
}

impl Caches {
    /// Empty caches and their writers, with no Velero namespace watched.
    pub fn new() -> (Caches, CacheWriters) {
        Self::new_for(&[])
    }

    /// Empty caches and their writers; Velero's objects are watched in each of
    /// `velero_namespaces` (the policy's `veleroNamespaces`, where the chart gives the operator
    /// its rights; `*`: every namespace).
    pub fn new_for(velero_namespaces: &[String]) -> (Caches, CacheWriters) {
        let mut children = Vec::new();
        let mut writers = Vec::new();
        for ar in child_kinds() {
            let store = Arc::new(RecordStore::default());
            children.push((ar.clone(), store.clone()));
            writers.push((ar, RecordWriter(store)));
        }
        let mut optional = Vec::new();
        let mut optional_writers = Vec::new();
        for ar in watched_optional_kinds() {
            let store = Arc::new(RecordStore::default());
            optional.push((ar.clone(), store.clone()));
            optional_writers.push((ar, OptionalWriter(RecordWriter(store))));
        }
        let scopes: Vec<Option<&str>> = match velero_namespaces.iter().any(|n| n == "*") {
            true => vec![None],
            false => velero_namespaces.iter().map(|n| Some(n.as_str())).collect(),
        };
        let (velero, velero_writers) = scopes
            .into_iter()
            .map(|namespace| {
                let stores = VeleroStores {
                    namespace: namespace.map(Into::into),
                    schedules: Arc::default(),
                    backups: Arc::default(),
                };
                let writers = VeleroWriters {
                    namespace: namespace.map(String::from),
                    schedules: OptionalWriter(RecordWriter(stores.schedules.clone())),
                    backups: OptionalWriter(RecordWriter(stores.backups.clone())),
                };
                (stores, writers)
            })
            .unzip();
        let secrets = Arc::new(RecordStore::default());
        let namespaces_writer: Writer<PartialObjectMeta<Namespace>> = Writer::default();
        let caches = Caches {
            children,
            secrets: secrets.clone(),
            namespaces: namespaces_writer.as_reader(),
            ready: Arc::new(AtomicBool::new(false)),
            optional,
            velero,
        };
        let writers = CacheWriters {
            children: writers,
            secrets: RecordWriter(secrets),
            namespaces: namespaces_writer,
            optional: optional_writers,
            velero: velero_writers,
        };
        (caches, writers)
    }

    fn velero_in(&self, namespace: &str) -> Option<&VeleroStores> {
        self.velero.iter().find(|v| v.namespace.as_deref().is_none_or(|n| n == namespace))
    }

    /// Whether objects of kind `ar` are cached when their API is served (the Prometheus
    /// Operator's kinds, Velero's Schedule).
    pub fn watches(&self, ar: &ApiResource) -> bool {
        self.watches_type(&ar.api_version, &ar.kind)
    }

    /// [`Caches::watches`] by apiVersion and kind.
    pub fn watches_type(&self, api_version: &str, kind: &str) -> bool {
        (api_version == "velero.io/v1" && kind == "Schedule")
            || self.optional.iter().any(|(a, _)| a.api_version == api_version && a.kind == kind)
    }

    /// What the cache of an optional API's kind holds of `namespace/name` (`Some(None)`: no
    /// such object), or `None` when no cache of that kind is in step with the API server (the
    /// kind is not watched here, its API is absent, or its watch is failing): read it then.
    pub fn watched(&self, ar: &ApiResource, namespace: &str, name: &str) -> Option<Option<ChildRecord>> {
        let store = match is_schedule(ar) {
            true => self.velero_in(namespace)?.schedules.as_ref(),
            false => self
                .optional
                .iter()
                .find(|(a, _)| a.api_version == ar.api_version && a.kind == ar.kind)?
                .1
                .as_ref(),
        };
        store.in_step().then(|| store.get(namespace, name))
    }

    /// The Backups of the clinic `clinic_namespace/clinic` in `velero_namespace`, newest first,
    /// or `None` when no cache of them is in step (list them then).
    pub fn backups_of(
        &self,
        velero_namespace: &str,
        clinic_namespace: &str,
        clinic: &str,
    ) -> Option<Vec<BackupRecord>> {
        let store = &self.velero_in(velero_namespace)?.backups;
        if !store.in_step() {
            return None;
        }
        let mut records: Vec<BackupRecord> = store
            .read()
            .namespaces
            .get(velero_namespace)
            .into_iter()
            .flatten()
            .filter(|(_, slot)| slot.record.is_of(clinic_namespace, clinic))
            .map(|(_, slot)| slot.record.record.clone())
            .collect();
        super::backups::newest_first(&mut records);
        Some(records)
    }

    /// Waits until every cache has listed once. Until then a missing object may only be missing
    /// from the cache, so nothing may be pruned or judged absent.
    pub async fn wait_ready(&self) {
        if self.ready.load(Ordering::Acquire) {
            return;
        }
        // The watches fill all caches concurrently; waiting on them in turn costs nothing more.
        for (_, store) in &self.children {
            store.wait_ready().await;
        }
        self.secrets.wait_ready().await;
        // An error only means the writer was dropped (shutdown): nothing to wait for then.
        let _ = self.namespaces.wait_until_ready().await;
        self.ready.store(true, Ordering::Release);
    }

    /// Whether every cache has listed once (what `/readyz` reports).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn store(&self, kind: &str) -> Option<&RecordStore<ChildRecord>> {
        self.children.iter().find(|(ar, _)| ar.kind == kind).map(|(_, s)| s.as_ref())
    }

    /// The cached record of the child of kind `ar`.
    pub fn get(&self, ar: &ApiResource, namespace: &str, name: &str) -> Option<ChildRecord> {
        self.store(&ar.kind)?.get(namespace, name)
    }

    /// What the cache holds of a StatefulSet or Deployment (`kind`) and its status.
    pub fn workload(&self, kind: &str, namespace: &str, name: &str) -> Option<WorkloadRecord> {
        let state = self.store(kind)?.read();
        let slot = state.namespaces.get(namespace)?.get(name)?;
        slot.record.workload.as_deref().cloned()
    }

    /// Kind and name of the cached children in `namespace` controlled by the owner `owner_uid`.
    pub fn owned_by(&self, namespace: &str, owner_uid: &str) -> Vec<(ApiResource, String)> {
        let mut out = Vec::new();
        for (ar, store) in &self.children {
            let state = store.read();
            let owned = state
                .namespaces
                .get(namespace)
                .into_iter()
                .flatten()
                .filter(|(_, slot)| slot.record.owner_uid.as_deref() == Some(owner_uid));
            out.extend(owned.map(|(name, _)| (ar.clone(), name.to_string())));
        }
        out
    }

    /// Labels of a namespace, if it is cached.
    pub fn namespace_labels(&self, name: &str) -> Option<std::collections::BTreeMap<String, String>> {
        self.namespaces.get(&ObjectRef::new(name)).map(|n| n.metadata.labels.clone().unwrap_or_default())
    }

    /// The cached record of a Secret.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<SecretRecord> {
        self.secrets.get(namespace, name)
    }
}

fn is_schedule(ar: &ApiResource) -> bool {
    ar.group == "velero.io" && ar.kind == "Schedule"
}

/// A metadata-only watch event as the object the child writers read (metadata, no body).
pub fn metadata_event(
    event: Event<PartialObjectMeta<DynamicObject>>,
    types: &kube::core::TypeMeta,
) -> Event<DynamicObject> {
    let keep_managed_fields = marker_reads_managed_fields(&types.kind);
    let convert = |mut meta: PartialObjectMeta<DynamicObject>| {
        if !keep_managed_fields {
            meta.metadata.managed_fields = None;
        }
        DynamicObject { types: Some(types.clone()), metadata: meta.metadata, data: serde_json::json!({}) }
    };
    match event {
        Event::Apply(o) => Event::Apply(convert(o)),
        Event::Delete(o) => Event::Delete(convert(o)),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(convert(o)),
        Event::InitDone => Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn child(kind: &str, namespace: &str, name: &str, version: &str, body: Value) -> DynamicObject {
        let mut object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": {
                "name": name, "namespace": namespace, "resourceVersion": version, "generation": 3,
                "annotations": { DESIRED_HASH_ANNOTATION: "h1" },
                "ownerReferences": [{
                    "apiVersion": "clinic.audioprothese.fr/v1alpha1", "kind": "ClinicPlatform",
                    "name": "lyon", "uid": "uid-lyon", "controller": true,
                }],
            },
        }))
        .expect("an object");
        object.data = body;
        object
    }

    fn kind_writer<'w>(caches_writers: &'w mut CacheWriters, kind: &str) -> &'w mut ChildWriter {
        &mut caches_writers.children.iter_mut().find(|(ar, _)| ar.kind == kind).expect("a child kind").1
    }

    #[test]
    fn a_relist_keeps_what_it_delivers_again_and_drops_the_rest() {
        let (caches, mut writers) = Caches::new();
        let service = ApiResource::erase::<Service>(&());
        let writer = kind_writer(&mut writers, "Service");
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(child("Service", "ns", "a", "1", json!({}))));
        writer.apply_watcher_event(&Event::InitApply(child("Service", "ns", "b", "1", json!({}))));
        writer.apply_watcher_event(&Event::InitDone);
        let first = caches.get(&service, "ns", "a").expect("cached");
        assert_eq!(first.declared_hash.as_deref(), Some("h1"));
        assert_eq!(first.owner_uid.as_deref(), Some("uid-lyon"));

        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(child("Service", "ns", "a", "2", json!({}))));
        // Mid-relist, what is not delivered yet is still there.
        assert!(caches.get(&service, "ns", "b").is_some());
        writer.apply_watcher_event(&Event::InitDone);
        assert!(caches.get(&service, "ns", "b").is_none(), "gone from the relist, gone from the cache");
        assert_ne!(caches.get(&service, "ns", "a").expect("cached").marker, first.marker, "a new version");

        writer.apply_watcher_event(&Event::Delete(child("Service", "ns", "a", "3", json!({}))));
        assert!(caches.get(&service, "ns", "a").is_none());
        assert!(caches.owned_by("ns", "uid-lyon").is_empty());
    }

    #[test]
    fn a_secret_record_keeps_what_adoption_and_certificates_read_and_no_value() {
        use crate::desired::internal_tls::{CA_FINGERPRINT_ANNOTATION, NOT_AFTER_ANNOTATION};
        let (caches, mut writers) = Caches::new();
        let secret: PartialObjectMeta<Secret> = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": "lyon-db-tls", "namespace": "ns", "resourceVersion": "42",
                "labels": { "app.kubernetes.io/instance": "lyon", "app.kubernetes.io/managed-by": "clinic-operator" },
                "annotations": { NOT_AFTER_ANNOTATION: "2027-01-01T00:00:00Z", CA_FINGERPRINT_ANNOTATION: "ab12",
                    "cert-manager.io/alt-names": "lyon-mariadb" },
                "ownerReferences": [{ "apiVersion": "v1", "kind": "ClinicPlatform", "name": "lyon", "uid": "uid-lyon" }],
            },
        }))
        .expect("metadata");
        writers.secrets.apply_watcher_event(&Event::Apply(secret));
        let record = caches.secret("ns", "lyon-db-tls").expect("cached");
        assert_eq!(&*record.resource_version, "42");
        assert_eq!(record.not_after.as_deref(), Some("2027-01-01T00:00:00Z"));
        assert_eq!(record.ca_fingerprint.as_deref(), Some("ab12"));
        assert_eq!(record.owner_uids.iter().map(|u| &**u).collect::<Vec<_>>(), vec!["uid-lyon"]);
        let labels = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert!(record.has_labels(&labels(&[("app.kubernetes.io/instance", "lyon")])));
        assert!(!record.has_labels(&labels(&[("app.kubernetes.io/instance", "nice")])), "another value");
        assert!(!record.has_labels(&labels(&[("app.kubernetes.io/part-of", "lyon")])), "a missing key");
        assert!(caches.secret("ns", "other").is_none());
    }

    #[test]
    fn owned_by_lists_the_owners_children_of_its_namespace_only() {
        let (caches, mut writers) = Caches::new();
        let writer = kind_writer(&mut writers, "ConfigMap");
        writer.apply_watcher_event(&Event::Apply(child("ConfigMap", "ns", "mine", "1", json!({}))));
        writer.apply_watcher_event(&Event::Apply(child("ConfigMap", "other", "theirs", "1", json!({}))));
        let mut foreign = child("ConfigMap", "ns", "foreign", "1", json!({}));
        foreign.metadata.owner_references = None;
        writer.apply_watcher_event(&Event::Apply(foreign));
        let owned: Vec<String> = caches.owned_by("ns", "uid-lyon").into_iter().map(|(_, n)| n).collect();
        assert_eq!(owned, vec!["mine".to_string()]);
    }

    #[test]
    fn workloads_keep_what_status_reads_and_their_marker_ignores_status() {
        let (caches, mut writers) = Caches::new();
        let body = |ready: i64| {
            json!({
                "spec": { "replicas": 2, "template": { "spec": { "containers": [
                    { "name": "gateway", "image": "nginx:1.27" }, { "name": "exporter", "image": "exp:1" }
                ]}}},
                "status": { "observedGeneration": 3, "replicas": 2, "availableReplicas": ready,
                    "readyReplicas": 2, "updatedReplicas": 2, "conditions": [
                        { "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "forbidden" }
                    ]},
            })
        };
        let writer = kind_writer(&mut writers, "Deployment");
        writer.apply_watcher_event(&Event::Apply(child("Deployment", "ns", "gw", "1", body(1))));
        let first = caches.get(&ApiResource::erase::<Deployment>(&()), "ns", "gw").expect("cached");
        let workload = caches.workload("Deployment", "ns", "gw").expect("a workload");
        assert_eq!(
            (workload.desired, workload.created, workload.ready, workload.updated, workload.current),
            (2, 2, 1, 2, true),
            "a Deployment is ready by its available replicas"
        );
        assert_eq!(workload.failure.as_deref(), Some("forbidden"));
        assert_eq!(workload.image("exporter"), Some("exp:1"));
        // A status update moves the resourceVersion, not the generation: the marker stays.
        writer.apply_watcher_event(&Event::Apply(child("Deployment", "ns", "gw", "2", body(2))));
        let second = caches.get(&ApiResource::erase::<Deployment>(&()), "ns", "gw").expect("cached");
        assert_eq!(first.marker, second.marker);
        assert_eq!(caches.workload("Deployment", "ns", "gw").map(|w| w.ready), Some(2));

        // Deleted and made again with the same metadata: a new object, whatever its generation.
        let mut again = child("Deployment", "ns", "gw", "3", body(2));
        again.metadata.uid = Some("another-uid".into());
        writer.apply_watcher_event(&Event::Apply(again));
        let third = caches.get(&ApiResource::erase::<Deployment>(&()), "ns", "gw").expect("cached");
        assert_ne!(third.marker, second.marker, "a new uid is a new object");

        let writer = kind_writer(&mut writers, "StatefulSet");
        writer.apply_watcher_event(&Event::Apply(child("StatefulSet", "ns", "db", "1", body(0))));
        let db = caches.workload("StatefulSet", "ns", "db").expect("a workload");
        assert_eq!(db.ready, 2, "a StatefulSet is ready by its ready replicas");
    }

    fn hpa_meta(resource_version: &str, managed_fields: Value) -> ObjectMeta {
        serde_json::from_value(json!({
            "name": "lyon-gateway", "namespace": "ns", "uid": "uid-hpa", "resourceVersion": resource_version,
            "annotations": { DESIRED_HASH_ANNOTATION: "h1" },
            "managedFields": managed_fields,
        }))
        .expect("metadata")
    }

    fn entry(manager: &str, operation: &str, subresource: Option<&str>, time: &str, fields: Value) -> Value {
        let mut entry = json!({ "manager": manager, "operation": operation, "apiVersion": "autoscaling/v2",
            "time": time, "fieldsType": "FieldsV1", "fieldsV1": fields });
        if let Some(subresource) = subresource {
            entry["subresource"] = json!(subresource);
        }
        entry
    }

    #[test]
    fn an_autoscaler_without_generation_is_marked_by_who_wrote_its_spec_not_its_status() {
        let ours = entry(
            "clinic-operator",
            "Apply",
            None,
            "2026-12-07T10:00:00Z",
            json!({"f:spec": {"f:minReplicas": {}}}),
        );
        let status = |time: &str| {
            entry(
                "kube-controller-manager",
                "Update",
                Some("status"),
                time,
                json!({"f:status": {"f:currentReplicas": {}}}),
            )
        };
        let applied = marker("HorizontalPodAutoscaler", &hpa_meta("10", json!([ours.clone()])));
        let first_status = hpa_meta("11", json!([ours.clone(), status("2026-12-07T10:00:15Z")]));
        let later_status = hpa_meta("12", json!([ours.clone(), status("2026-12-07T10:05:00Z")]));
        assert_eq!(marker("HorizontalPodAutoscaler", &first_status), applied, "a status write");
        assert_eq!(marker("HorizontalPodAutoscaler", &later_status), applied, "another status write");

        let edit = entry(
            "kubectl-edit",
            "Update",
            None,
            "2026-12-07T10:06:00Z",
            json!({"f:spec": {"f:maxReplicas": {}}}),
        );
        let edited = hpa_meta("13", json!([ours.clone(), status("2026-12-07T10:05:00Z"), edit]));
        assert_ne!(marker("HorizontalPodAutoscaler", &edited), applied, "someone else's write to the spec");
        // The same manager in the same second, another field: told apart by the fields.
        let wider = json!({"f:spec": {"f:minReplicas": {}, "f:behavior": {}}});
        let reapplied = entry("clinic-operator", "Apply", None, "2026-12-07T10:00:00Z", wider);
        assert_ne!(marker("HorizontalPodAutoscaler", &hpa_meta("14", json!([reapplied]))), applied);
        let mut relabelled = hpa_meta("15", json!([ours.clone()]));
        relabelled.labels = Some([("team".to_string(), "a".to_string())].into());
        assert_ne!(marker("HorizontalPodAutoscaler", &relabelled), applied, "a label");
        let mut again = hpa_meta("16", json!([ours.clone()]));
        again.uid = Some("another-uid".into());
        assert_ne!(marker("HorizontalPodAutoscaler", &again), applied, "deleted and made again");

        // Without managedFields (a source that strips them), only the resourceVersion can tell.
        let (bare, bare_later) = (hpa_meta("17", Value::Null), hpa_meta("18", Value::Null));
        assert_ne!(marker("HorizontalPodAutoscaler", &bare), marker("HorizontalPodAutoscaler", &bare_later));
        // Other kinds without generation keep following the resourceVersion.
        assert_ne!(marker("Service", &first_status), marker("Service", &later_status));
    }

    #[test]
    fn the_autoscalers_metadata_watch_keeps_their_managed_fields_and_no_other_kinds() {
        let meta: PartialObjectMeta<DynamicObject> = serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": hpa_meta("10", json!([entry("clinic-operator", "Apply", None, "2026-12-07T10:00:00Z", json!({}))])),
        }))
        .expect("metadata");
        let of = |kind: &str| {
            let types = kube::core::TypeMeta { api_version: "v1".into(), kind: kind.into() };
            match metadata_event(Event::Apply(meta.clone()), &types) {
                Event::Apply(o) => o.metadata.managed_fields.is_some(),
                _ => unreachable!("an Apply stays an Apply"),
            }
        };
        assert!(of("HorizontalPodAutoscaler"));
        assert!(!of("Service"));
    }

    #[test]
    fn the_revision_a_deployment_controller_writes_does_not_move_the_marker() {
        let mut meta = hpa_meta("1", Value::Null);
        meta.generation = Some(1);
        let created = marker("Deployment", &meta);
        meta.annotations
            .get_or_insert_default()
            .insert("deployment.kubernetes.io/revision".into(), "1".into());
        meta.resource_version = Some("2".into());
        assert_eq!(marker("Deployment", &meta), created);
        meta.annotations.get_or_insert_default().insert("team".into(), "a".into());
        assert_ne!(marker("Deployment", &meta), created, "any other annotation");
    }

    fn velero_object(kind: &str, name: &str, clinic: (&str, &str), status: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "velero.io/v1", "kind": kind,
            "metadata": { "name": name, "namespace": "velero", "resourceVersion": "1", "generation": 1,
                "labels": { CLINIC_NAMESPACE_LABEL: clinic.0, "app.kubernetes.io/instance": clinic.1 } },
            "status": status,
        }))
        .expect("an object")
    }

    #[test]
    fn an_optional_cache_is_read_only_while_its_watch_is_in_step() {
        let (caches, mut writers) = Caches::new_for(&["velero".to_string()]);
        let schedule = crate::desired::backup::schedule_resource();
        let velero = writers.velero.first_mut().expect("velero's namespace is watched");
        assert_eq!(caches.watched(&schedule, "velero", "a"), None, "not listed yet: read it");
        velero.schedules.apply_watcher_result(&Ok(Event::Init));
        let a = velero_object("Schedule", "a", ("ns", "lyon"), json!({}));
        velero.schedules.apply_watcher_result(&Ok(Event::InitApply(a.clone())));
        assert_eq!(caches.watched(&schedule, "velero", "a"), None, "mid-list");
        velero.schedules.apply_watcher_result(&Ok(Event::InitDone));
        assert!(caches.watched(&schedule, "velero", "a").is_some_and(|r| r.is_some()));
        assert_eq!(caches.watched(&schedule, "velero", "b"), Some(None), "in step: b does not exist");
        assert_eq!(caches.watched(&schedule, "elsewhere", "a"), None, "a namespace not watched");
        // The watch fails (its API went, the connection broke): out of step until it delivers again.
        let error = kube::runtime::watcher::Error::NoResourceVersion;
        velero.schedules.apply_watcher_result(&Err(error));
        assert_eq!(caches.watched(&schedule, "velero", "b"), None);
        velero.schedules.apply_watcher_result(&Ok(Event::Apply(velero_object(
            "Schedule",
            "b",
            ("ns", "nice"),
            json!({}),
        ))));
        assert!(caches.watched(&schedule, "velero", "b").is_some_and(|r| r.is_some()), "resumed");
        assert!(caches.watches(&schedule));
        assert!(!caches.watches(&ApiResource::erase::<ConfigMap>(&())), "not an optional kind");
        let monitor = crate::desired::monitoring::service_monitor_resource();
        assert_eq!(caches.watched(&monitor, "ns", "m"), None, "its watch never listed");
    }

    #[test]
    fn the_backups_of_a_clinic_come_from_its_velero_namespace_newest_first() {
        let (caches, mut writers) = Caches::new_for(&["velero".to_string()]);
        let velero = writers.velero.first_mut().expect("velero's namespace is watched");
        assert_eq!(caches.backups_of("velero", "ns", "lyon"), None, "not listed yet: list them");
        velero.backups.apply_watcher_result(&Ok(Event::Init));
        for (name, clinic, started) in [
            ("lyon-1", ("ns", "lyon"), "2026-12-01T02:00:00Z"),
            ("lyon-2", ("ns", "lyon"), "2026-12-02T02:00:00Z"),
            ("nice-1", ("ns", "nice"), "2026-12-02T02:00:00Z"),
            ("other-lyon", ("other", "lyon"), "2026-12-03T02:00:00Z"),
        ] {
            let status = json!({ "phase": "Completed", "startTimestamp": started });
            velero
                .backups
                .apply_watcher_result(&Ok(Event::InitApply(velero_object("Backup", name, clinic, status))));
        }
        velero.backups.apply_watcher_result(&Ok(Event::InitDone));
        let names = |records: Option<Vec<BackupRecord>>| -> Option<Vec<String>> {
            records.map(|r| r.into_iter().map(|b| b.name).collect())
        };
        assert_eq!(
            names(caches.backups_of("velero", "ns", "lyon")),
            Some(vec!["lyon-2".into(), "lyon-1".into()])
        );
        assert_eq!(names(caches.backups_of("velero", "ns", "paris")), Some(vec![]));
        assert_eq!(caches.backups_of("backups", "ns", "lyon"), None, "another Velero namespace");
        let (everywhere, _) = Caches::new_for(&["velero".to_string(), "*".to_string()]);
        assert_eq!(everywhere.velero.len(), 1, "any namespace: one watch of them all");
    }
}
