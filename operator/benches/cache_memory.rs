//! `cargo bench -p clinic-operator --bench cache_memory`: the heap the operator's caches (and its
//! memory of verified children) hold for a fleet of converged default clinics, per clinic, and
//! beside them the other parts that grow with the fleet: the cached ClinicPlatforms and the
//! per-clinic metric series.
//!
//! Not a test (nothing asserts a size): it prints figures for `docs/benchmarks.md`. Every child
//! of N clinics is rendered, given what the API server adds (uid, resourceVersion, generation,
//! creation time, a workload status), and fed to the caches as the watches do; the bytes still
//! allocated once the inputs are dropped are what the caches keep.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use clinic_operator::api::ClinicPlatform;
use clinic_operator::desired::{self, SecretValues};
use clinic_operator::metrics::{ClinicTimes, Metrics};
use clinic_operator::model;
use clinic_operator::reconcile::caches::{CacheWriters, Caches, marker};
use clinic_operator::reconcile::memory::Memory;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{DynamicObject, ObjectMeta, PartialObjectMeta};
use kube::runtime::watcher::Event;

/// Live heap bytes: every allocation counted until it is freed.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// The children of clinic `i` as the API server would send them in a watch.
fn served_children(i: usize) -> Vec<DynamicObject> {
    let yaml = format!(
        "apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata:\n  name: clinic-{i:04}\n  namespace: clinic-{i:04}\n  uid: 6f1c2a8e-0000-4000-8000-{i:012}\nspec: {{}}\n"
    );
    let cp: ClinicPlatform = serde_yaml::from_str(&yaml).expect("a ClinicPlatform");
    let clinic = model::validate(&cp).expect("the default clinic is valid");
    let mut objects = desired::objects(&clinic, &SecretValues::Placeholder);
    for (n, o) in objects.iter_mut().enumerate() {
        let meta: &mut ObjectMeta = &mut o.metadata;
        meta.uid = Some(format!("0b7e4c1d-{i:04}-4000-8000-{n:012}"));
        meta.resource_version = Some(format!("{}", 100_000 + i * 40 + n));
        meta.generation = Some(1);
        meta.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-12-06T05:00:00Z".parse().expect("a timestamp"),
        ));
        let kind = o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
        if matches!(kind.as_str(), "StatefulSet" | "Deployment") {
            o.data["status"] = serde_json::json!({
                "observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "availableReplicas": 2,
                "updatedReplicas": 2, "currentReplicas": 2,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                     "message": "Deployment has minimum availability.",
                     "lastTransitionTime": "2026-12-06T05:00:00Z", "lastUpdateTime": "2026-12-06T05:00:00Z"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                     "message": "ReplicaSet has successfully progressed.",
                     "lastTransitionTime": "2026-12-06T05:00:00Z", "lastUpdateTime": "2026-12-06T05:00:00Z"}
                ]
            });
        }
    }
    objects
}

/// The child caches, filled as the watches fill them: workloads whole, every other kind as
/// metadata only.
fn fill_children_only(n: usize) -> (Caches, CacheWriters) {
    let (caches, mut writers) = Caches::new();
    for (_, writer) in &mut writers.children {
        writer.apply_watcher_event(&Event::Init);
    }
    for i in 0..n {
        for mut object in served_children(i) {
            let kind = object.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
            let Some((_, writer)) = writers.children.iter_mut().find(|(ar, _)| ar.kind == kind) else {
                continue;
            };
            if !clinic_operator::reconcile::caches::is_workload(&kind) {
                object.data = serde_json::json!({});
            }
            writer.apply_watcher_event(&Event::InitApply(object));
        }
    }
    for (_, writer) in &mut writers.children {
        writer.apply_watcher_event(&Event::InitDone);
    }
    (caches, writers)
}

/// The Secrets' cache, filled as the Secret watch fills it (metadata in, records kept).
fn fill_secrets(n: usize) -> impl Sized {
    let (caches, mut writers) = Caches::new();
    writers.secrets.apply_watcher_event(&Event::Init);
    for i in 0..n {
        for object in served_children(i) {
            if object.types.as_ref().is_some_and(|t| t.kind == "Secret") {
                // Secrets are watched as metadata only.
                let meta = PartialObjectMeta::<Secret> {
                    types: object.types.clone(),
                    metadata: object.metadata,
                    _phantom: Default::default(),
                };
                writers.secrets.apply_watcher_event(&Event::InitApply(meta));
            }
        }
    }
    writers.secrets.apply_watcher_event(&Event::InitDone);
    (caches, writers.secrets)
}

/// The memory of verified children: every cached child of a converged fleet, with its marker.
fn fill_markers(n: usize) -> Memory {
    let memory = Memory::default();
    for i in 0..n {
        for object in served_children(i) {
            let kind = object.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
            if kind != "Secret" {
                let key = (kind.clone(), object.namespace().unwrap_or_default(), object.name_any());
                memory.set_verified(key, marker(&kind, &object.metadata));
            }
        }
    }
    memory
}

/// The ClinicPlatforms of `n` clinics as the operator caches them: a converged clinic's object as
/// the API server served it in the real-pods tier (managedFields dropped, as the watch does).
fn served_clinics(n: usize) -> Vec<ClinicPlatform> {
    let sample: serde_json::Value =
        serde_json::from_str(include_str!("converged-clinic.json")).expect("the fixture is JSON");
    (0..n)
        .map(|i| {
            let mut cp = sample.clone();
            cp["metadata"]["name"] = format!("clinic-{i:04}").into();
            cp["metadata"]["namespace"] = format!("clinic-{i:04}").into();
            cp["metadata"]["uid"] = format!("6f1c2a8e-0000-4000-8000-{i:012}").into();
            serde_json::from_value(cp).expect("a ClinicPlatform")
        })
        .collect()
}

/// Heap kept by `make`'s result, in bytes.
fn kept<T>(make: impl FnOnce() -> T) -> (T, isize) {
    let before = live();
    let held = make();
    (held, live() - before)
}

fn mib(bytes: isize) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

/// KiB per clinic.
fn kib_each(bytes: isize, clinics: usize) -> f64 {
    bytes as f64 / 1024.0 / clinics as f64
}

fn main() {
    // `cargo test --all-targets` builds and starts benches too: measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "cache memory benchmark: run `cargo bench -p clinic-operator --bench cache_memory` to measure"
        );
        return;
    }
    for n in [100usize, 1000] {
        let (caches, records) = kept(|| fill_children_only(n));
        let (secrets, secret_bytes) = kept(|| fill_secrets(n));
        let (markers, marker_bytes) = kept(|| fill_markers(n));
        drop((caches, secrets, markers));
        let (clinics, clinic_bytes) = kept(|| {
            let (reader, mut writer) = kube::runtime::reflector::store::<ClinicPlatform>();
            writer.apply_watcher_event(&Event::Init);
            for cp in served_clinics(n) {
                writer.apply_watcher_event(&Event::InitApply(cp));
            }
            writer.apply_watcher_event(&Event::InitDone);
            (reader, writer)
        });
        drop(clinics);
        let (metrics, metric_bytes) = kept(|| {
            let metrics = Metrics::new();
            let times = ClinicTimes {
                last_backup: Some(1.8e9),
                database_certificate_expiry: Some(1.9e9),
                backend_certificate_expiry: None,
            };
            for i in 0..n {
                let namespace = format!("clinic-{i:04}");
                metrics.observe_clinic(&namespace, &namespace, true, times);
                metrics.observe_probe(&namespace, &namespace, true, 0.01);
            }
            metrics
        });
        drop(metrics);
        let parts = [
            ("child records", records),
            ("Secret records", secret_bytes),
            ("verified markers", marker_bytes),
            ("ClinicPlatforms", clinic_bytes),
            ("metric series", metric_bytes),
        ];
        let total: isize = parts.iter().map(|(_, b)| b).sum();
        let shown: Vec<String> = parts
            .iter()
            .map(|(what, b)| format!("{what} {:.1} MiB ({:.1} KiB)", mib(*b), kib_each(*b, n)))
            .collect();
        println!(
            "{n:>5} clinics: {:.1} MiB in all, {:.1} KiB per clinic: {}",
            mib(total),
            kib_each(total, n),
            shown.join(", ")
        );
    }
}
