//! What the reconciler reads: caches (reflector stores) of every child kind, filled by watches
//! that also trigger reconciles when a child changes or disappears.
//!
//! Only objects labelled `app.kubernetes.io/managed-by=clinic-operator` are watched, managed
//! fields are dropped before caching, and Secrets are cached as metadata only: the operator never
//! holds a password in memory after creating it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::{Resource, ResourceExt};

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

/// What the caches keep of a child: its metadata, and for workloads what status and the upgrade
/// gate read (replicas, container images, status). Everything else is dropped when it arrives:
/// at a thousand clinics full objects would cost hundreds of MiB, and drift is detected from
/// metadata (see [`marker`]) and confirmed by reading the object.
pub fn slim(object: &mut DynamicObject) {
    object.managed_fields_mut().clear();
    let kind = object.types.as_ref().map(|t| t.kind.as_str()).unwrap_or_default();
    let data = std::mem::take(&mut object.data);
    if matches!(kind, "StatefulSet" | "Deployment") {
        let spec = &data["spec"];
        let containers: Vec<serde_json::Value> = spec["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| serde_json::json!({ "name": c["name"], "image": c["image"] }))
            .collect();
        // `selector` and `template` are required by the typed structs that status reads.
        let mut slim_spec = serde_json::json!({
            "selector": {},
            "template": { "spec": { "containers": containers } },
        });
        if let Some(replicas) = spec.get("replicas") {
            slim_spec["replicas"] = replicas.clone();
        }
        object.data = serde_json::json!({ "spec": slim_spec, "status": data.get("status").cloned().unwrap_or_default() });
    } else {
        object.data = serde_json::json!({});
    }
}

/// A metadata-only watch event as the object the caches hold (metadata, no body).
pub fn metadata_event(
    event: kube::runtime::watcher::Event<PartialObjectMeta<DynamicObject>>,
    types: &kube::core::TypeMeta,
) -> kube::runtime::watcher::Event<DynamicObject> {
    use kube::runtime::watcher::Event;
    let convert = |mut meta: PartialObjectMeta<DynamicObject>| {
        meta.metadata.managed_fields = None;
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

/// A fingerprint of a child's state as the cache sees it. Where controllers write status
/// (workloads, autoscalers, budgets) the resourceVersion moves on every status update, so the
/// spec is followed by `metadata.generation`, and labels, annotations and owners by their hash;
/// elsewhere any change moves the resourceVersion.
pub fn marker(kind: &str, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    let generation = meta.generation.filter(|g| *g > 0);
    match (kind, generation) {
        ("StatefulSet" | "Deployment" | "HorizontalPodAutoscaler" | "PodDisruptionBudget", Some(g)) => {
            format!(
                "g{g}:{}",
                crate::desired::hash_of(&(&meta.labels, &meta.annotations, &meta.owner_references))
            )
        }
        _ => format!("r{}", meta.resource_version.as_deref().unwrap_or_default()),
    }
}

/// Read side of the caches.
#[derive(Clone)]
pub struct Caches {
    children: Vec<(ApiResource, Store<DynamicObject>)>,
    secrets: Store<PartialObjectMeta<Secret>>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    ready: Arc<AtomicBool>,
}

/// Write side, handed to the watch streams.
pub struct CacheWriters {
    pub children: Vec<(ApiResource, Writer<DynamicObject>)>,
    pub secrets: Writer<PartialObjectMeta<Secret>>,
    pub namespaces: Writer<PartialObjectMeta<Namespace>>,
}

impl Caches {
    /// Empty caches and their writers.
    pub fn new() -> (Caches, CacheWriters) {
        let mut children = Vec::new();
        let mut writers = Vec::new();
        for ar in child_kinds() {
            let writer = Writer::new(ar.clone());
            children.push((ar.clone(), writer.as_reader()));
            writers.push((ar, writer));
        }
        let secrets_writer: Writer<PartialObjectMeta<Secret>> = Writer::default();
        let namespaces_writer: Writer<PartialObjectMeta<Namespace>> = Writer::default();
        let caches = Caches {
            children,
            secrets: secrets_writer.as_reader(),
            namespaces: namespaces_writer.as_reader(),
            ready: Arc::new(AtomicBool::new(false)),
        };
        (caches, CacheWriters { children: writers, secrets: secrets_writer, namespaces: namespaces_writer })
    }

    /// Waits until every cache has listed once. Until then a missing object may only be missing
    /// from the cache, so nothing may be pruned or judged absent.
    pub async fn wait_ready(&self) {
        if self.ready.load(Ordering::Acquire) {
            return;
        }
        // The watches fill all caches concurrently; waiting on them in turn costs nothing more.
        // An error only means the writer was dropped (shutdown): nothing to wait for then.
        for (_, store) in &self.children {
            let _ = store.wait_until_ready().await;
        }
        let _ = self.secrets.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
        self.ready.store(true, Ordering::Release);
    }

    /// Whether every cache has listed once (what `/readyz` reports).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn store(&self, ar: &ApiResource) -> Option<&Store<DynamicObject>> {
        self.children.iter().find(|(kind, _)| kind == ar).map(|(_, s)| s)
    }

    /// The cached child of kind `ar`.
    pub fn get(&self, ar: &ApiResource, namespace: &str, name: &str) -> Option<Arc<DynamicObject>> {
        let key = ObjectRef::new_with(name, ar.clone()).within(namespace);
        self.store(ar)?.get(&key)
    }

    /// The typed view of a cached child, e.g. a StatefulSet's status.
    pub fn get_typed<K>(&self, namespace: &str, name: &str) -> Option<K>
    where
        K: Resource<DynamicType = ()> + serde::de::DeserializeOwned,
    {
        let object = self.get(&ApiResource::erase::<K>(&()), namespace, name)?;
        serde_json::to_value(object.as_ref()).ok().and_then(|v| serde_json::from_value(v).ok())
    }

    /// Cached children of every kind that belong to the ClinicPlatform with `owner_uid`.
    pub fn owned_by(&self, namespace: &str, owner_uid: &str) -> Vec<(ApiResource, Arc<DynamicObject>)> {
        let mut out = Vec::new();
        for (ar, store) in &self.children {
            for object in store.state() {
                let owned = object.metadata.namespace.as_deref() == Some(namespace)
                    && object
                        .owner_references()
                        .iter()
                        .any(|o| o.uid == owner_uid && o.controller == Some(true));
                if owned {
                    out.push((ar.clone(), object));
                }
            }
        }
        out
    }

    /// Labels of a namespace, if it is cached.
    pub fn namespace_labels(&self, name: &str) -> Option<std::collections::BTreeMap<String, String>> {
        self.namespaces.get(&ObjectRef::new(name)).map(|n| n.metadata.labels.clone().unwrap_or_default())
    }

    /// Cached metadata of a Secret.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Arc<PartialObjectMeta<Secret>>> {
        self.secrets.get(&ObjectRef::new(name).within(namespace))
    }
}
