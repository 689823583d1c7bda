//! A tiny dynamic volume provisioner for the test cluster: for each pending claim of the
//! `standard` or `encrypted-ssd` StorageClass it creates a matching PersistentVolume pre-bound
//! to the claim, and it deletes released volumes, as a real CSI driver would. On kwok the volume
//! is a hostPath nobody mounts; with a real node it is a `local` volume in a folder of the
//! node's run directory, pinned to that node, which the kubelet mounts and whose ownership it
//! gives to the pod's `fsGroup` (a hostPath would stay root's, unlike any real storage).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, LocalVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config, ResourceExt};

/// StorageClasses this provisioner serves: the default one, and the encrypting class the
/// production example names (created by the e2e suite with `encrypted: "true"`).
pub const CLASSES: &[&str] = &["standard", "encrypted-ssd"];

/// Provisioner name of the `standard` StorageClass.
pub const PROVISIONER: &str = "e2e.clinic.audioprothese.fr/hostpath";

/// Where `local` volumes live, and the node that has them.
#[derive(Debug, Clone)]
pub struct LocalVolumes {
    pub dir: std::path::PathBuf,
    pub node: String,
}

/// A running provisioner (on its own thread and runtime).
pub struct Provisioner {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Provisioner {
    pub fn start(kubeconfig: &Path, local: Option<LocalVolumes>) -> Result<Provisioner> {
        let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).context("reading kubeconfig")?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new().name("provisioner".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("provisioner: no runtime: {e}");
                    return;
                }
            };
            runtime.block_on(async move {
                let config = match Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("provisioner: bad kubeconfig: {e}");
                        return;
                    }
                };
                let client = match Client::try_from(config) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("provisioner: no client: {e}");
                        return;
                    }
                };
                tokio::select! {
                    result = run(client, local) => if let Err(e) = result { eprintln!("provisioner stopped: {e:#}") },
                    _ = stopped => {},
                }
            });
        })?;
        Ok(Provisioner { stop, thread })
    }

    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

async fn run(client: Client, local: Option<LocalVolumes>) -> Result<()> {
    let claims = watcher(Api::<PersistentVolumeClaim>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .map_ok(|c| Event::Claim(Box::new(c)))
        .boxed();
    let volumes = watcher(Api::<PersistentVolume>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .map_ok(|v| Event::Volume(Box::new(v)))
        .boxed();
    let mut events = futures::stream::select(claims, volumes);
    let pvs: Api<PersistentVolume> = Api::all(client);
    while let Some(event) = events.try_next().await? {
        match event {
            Event::Claim(claim) => {
                if let Some(pv) = volume_for(&claim, local.as_ref()) {
                    if let Some(path) = pv.spec.as_ref().and_then(|s| s.local.as_ref()).map(|l| &l.path)
                        && let Err(e) = std::fs::create_dir_all(path)
                    {
                        eprintln!("provisioner: creating {path}: {e}");
                        continue;
                    }
                    match pvs.create(&PostParams::default(), &pv).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(status)) if status.code == 409 => {}
                        Err(e) => eprintln!("provisioner: creating {}: {e}", pv.name_any()),
                    }
                }
            }
            Event::Volume(pv) => {
                let ours = pv.annotations().get("pv.kubernetes.io/provisioned-by").map(String::as_str)
                    == Some(PROVISIONER);
                let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
                if ours && released {
                    let _ = pvs.delete(&pv.name_any(), &DeleteParams::default()).await;
                }
            }
        }
    }
    Ok(())
}

enum Event {
    Claim(Box<PersistentVolumeClaim>),
    Volume(Box<PersistentVolume>),
}

/// The volume a pending claim of our class needs, if any.
fn volume_for(claim: &PersistentVolumeClaim, local: Option<&LocalVolumes>) -> Option<PersistentVolume> {
    let spec = claim.spec.as_ref()?;
    let class = spec.storage_class_name.as_deref().unwrap_or("standard");
    let pending = claim.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending") == "Pending";
    if !CLASSES.contains(&class)
        || spec.volume_name.is_some()
        || !pending
        || claim.metadata.deletion_timestamp.is_some()
    {
        return None;
    }
    // Node-local volumes wait for the scheduler's choice of node (WaitForFirstConsumer).
    if local.is_some() && !claim.annotations().contains_key("volume.kubernetes.io/selected-node") {
        return None;
    }
    let uid = claim.uid()?;
    let size = spec.resources.as_ref()?.requests.as_ref()?.get("storage")?.clone();
    Some(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(format!("pvc-{uid}")),
            annotations: Some(BTreeMap::from([(
                "pv.kubernetes.io/provisioned-by".to_string(),
                PROVISIONER.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_string(), size)])),
            access_modes: spec.access_modes.clone(),
            storage_class_name: Some(class.to_string()),
            persistent_volume_reclaim_policy: Some("Delete".into()),
            host_path: match local {
                None => Some(HostPathVolumeSource {
                    path: format!("/var/lib/e2e-volumes/{uid}"),
                    type_: Some("DirectoryOrCreate".into()),
                }),
                Some(_) => None,
            },
            local: local
                .map(|l| LocalVolumeSource { path: l.dir.join(&uid).display().to_string(), fs_type: None }),
            node_affinity: local.map(|l| VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
                            operator: "In".into(),
                            values: Some(vec![l.node.clone()]),
                        }]),
                        ..Default::default()
                    }],
                }),
            }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: claim.namespace(),
                name: Some(claim.name_any()),
                uid: Some(uid),
                ..Default::default()
            }),
            volume_mode: spec.volume_mode.clone(),
            ..Default::default()
        }),
        ..Default::default()
    })
}
