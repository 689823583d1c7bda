//! `cargo bench -p clinic-operator --bench cache_memory`: the heap the operator's caches (and its
//! memory of verified children) hold for a fleet of converged default clinics, per clinic.
//!
//! Not a test (nothing asserts a size): it prints figures for `docs/benchmarks.md`. Every child
//! of N clinics is rendered, given what the API server adds (uid, resourceVersion, generation,
//! creation time, a workload status), and fed to the caches as the watches do; the bytes still
//! allocated once the inputs are dropped are what the caches keep.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use clinic_operator::api::ClinicPlatform;
use clinic_operator::desired::{self, SecretValues};
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

/// What a converged fleet leaves in memory: the caches filled by the watches, and every cached
/// child remembered as verified.
struct Held {
    _caches: Caches,
    _writers: CacheWriters,
    _memory: Memory,
}

fn fill(n: usize) -> (Held, usize, usize) {
    let (caches, mut writers) = Caches::new();
    let memory = Memory::default();
    let (mut children, mut secrets) = (0, 0);
    for (_, writer) in &mut writers.children {
        writer.apply_watcher_event(&Event::Init);
    }
    writers.secrets.apply_watcher_event(&Event::Init);
    for i in 0..n {
        for object in served_children(i) {
            let kind = object.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
            if kind == "Secret" {
                // Secrets are watched as metadata only.
                let meta = PartialObjectMeta::<Secret> {
                    types: object.types.clone(),
                    metadata: object.metadata,
                    _phantom: Default::default(),
                };
                writers.secrets.apply_watcher_event(&Event::InitApply(meta));
                secrets += 1;
                continue;
            }
            let Some((_, writer)) = writers.children.iter_mut().find(|(ar, _)| ar.kind == kind) else {
                continue;
            };
            let key = (kind.clone(), object.namespace().unwrap_or_default(), object.name_any());
            memory.set_verified(key, marker(&kind, &object.metadata));
            // As the watches deliver them: workloads whole, every other kind as metadata only.
            let mut served = object;
            if !clinic_operator::reconcile::caches::is_workload(&kind) {
                served.data = serde_json::json!({});
            }
            writer.apply_watcher_event(&Event::InitApply(served));
            children += 1;
        }
    }
    for (_, writer) in &mut writers.children {
        writer.apply_watcher_event(&Event::InitDone);
    }
    writers.secrets.apply_watcher_event(&Event::InitDone);
    (Held { _caches: caches, _writers: writers, _memory: memory }, children, secrets)
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
        let before = live();
        let (held, children, secrets) = fill(n);
        let bytes = live() - before;
        println!(
            "{n:>5} clinics, {children} children and {secrets} Secrets cached: {:.1} MiB, {:.1} KiB per clinic, {:.0} bytes per object",
            bytes as f64 / 1024.0 / 1024.0,
            bytes as f64 / 1024.0 / n as f64,
            bytes as f64 / (children + secrets) as f64
        );
        drop(held);
    }
}
