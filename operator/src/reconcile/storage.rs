//! Evidence of encryption at rest: the StorageClasses of the clinic's data volumes, attested by
//! the platform's policy or recognised from their provisioners' parameters.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::context::Context;
use crate::model::Clinic;

/// How long the list of StorageClasses is reused.
const STORAGE_CLASSES_TTL: Duration = Duration::from_secs(60);

/// StorageClass parameters that well-known provisioners use to encrypt volumes.
pub fn storage_class_encrypts(parameters: &BTreeMap<String, String>) -> bool {
    let truthy = |k: &str| parameters.get(k).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    truthy("encrypted") // AWS EBS CSI, OpenStack Cinder
        || truthy("encryption") // several CSI drivers
        || parameters.contains_key("kmsKeyId") // AWS EBS with a customer key
        || parameters.contains_key("disk-encryption-set-id") // Azure Disk CMK
        || parameters.contains_key("diskEncryptionSetID") // Azure Disk CMK
        || parameters.contains_key("disk-encryption-kms-key") // GCE PD CMEK
        || parameters.contains_key("csi.storage.k8s.io/node-stage-secret-name") // LUKS (Ceph RBD, ...)
        || truthy("encryptionPassphrase")
}

/// One StorageClass as far as encryption goes.
#[derive(Debug, Clone)]
struct Class {
    name: String,
    default: bool,
    encrypts: bool,
}

/// The cluster's StorageClasses, and when they were listed.
#[derive(Default)]
pub struct StorageClassCache(tokio::sync::Mutex<Option<(Vec<Class>, Instant)>>);

/// The cluster's StorageClasses, listed at most once per [`STORAGE_CLASSES_TTL`].
async fn storage_classes(ctx: &Context) -> Vec<Class> {
    let mut cache = ctx.storage_classes.0.lock().await;
    if let Some((classes, listed)) = cache.as_ref()
        && listed.elapsed() < STORAGE_CLASSES_TTL
    {
        return classes.clone();
    }
    let api: Api<StorageClass> = Api::all(ctx.client.clone());
    let list = match api.list(&ListParams::default()).await {
        Ok(list) => list
            .items
            .iter()
            .map(|sc| {
                let default =
                    sc.annotations().get("storageclass.kubernetes.io/is-default-class").map(String::as_str)
                        == Some("true");
                let encrypts = storage_class_encrypts(&sc.parameters.clone().unwrap_or_default());
                Class { name: sc.name_any(), default, encrypts }
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    *cache = Some((list.clone(), Instant::now()));
    list
}

/// Whether the data volumes (MariaDB and backend) are encrypted at rest: their StorageClasses
/// are attested by the platform's policy (`encryptingStorageClasses`) or recognised from their
/// parameters. The tenant's own `spec.security.storageEncrypted` is not evidence.
pub async fn storage_encrypted(ctx: &Context, clinic: &Clinic) -> bool {
    let classes = storage_classes(ctx).await;
    let encrypts = |name: Option<&String>| match name {
        Some(name) => {
            ctx.policy.attests_encryption(name) || classes.iter().any(|c| c.name == *name && c.encrypts)
        }
        None => classes.iter().any(|c| c.default && (c.encrypts || ctx.policy.attests_encryption(&c.name))),
    };
    encrypts(clinic.spec.database.storage.storage_class_name.as_ref())
        && encrypts(clinic.spec.openmrs.backend.storage.storage_class_name.as_ref())
}
