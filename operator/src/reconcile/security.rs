//! Security state beyond the children: the namespace's Pod Security labels, the cert-manager
//! Certificate, encryption at rest, and the compliance evidence computed from all of it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use super::Context;
use super::error::{Error, Result};
use crate::api::FIELD_MANAGER;
use crate::model::Clinic;

/// The Pod Security level the operator enforces on clinic namespaces.
pub const POD_SECURITY_LEVEL: &str = "restricted";

/// Labels that make the API server enforce, audit and warn Pod Security `restricted`.
pub fn pod_security_labels() -> BTreeMap<String, String> {
    ["enforce", "audit", "warn"]
        .into_iter()
        .map(|mode| (format!("pod-security.kubernetes.io/{mode}"), POD_SECURITY_LEVEL.to_string()))
        .collect()
}

/// Whether the namespace's labels enforce `restricted` (whoever set them).
pub fn enforces_restricted(labels: &BTreeMap<String, String>) -> bool {
    labels.get("pod-security.kubernetes.io/enforce").map(String::as_str) == Some(POD_SECURITY_LEVEL)
}

/// Labels the clinic's namespace for Pod Security `restricted`. Labels are only ever added: a
/// clinic that opts out (when the platform's policy lets it) stops adding them but never
/// removes them, so two clinics of one namespace cannot undo each other, and lifting Pod
/// Security stays the platform team's act.
pub async fn ensure_pod_security(ctx: &Context, clinic: &Clinic) -> Result<()> {
    let Some(labels) = ctx.caches.namespace_labels(&clinic.namespace) else {
        return Ok(());
    };
    let wanted = pod_security_labels();
    let present = wanted.iter().all(|(k, v)| labels.get(k) == Some(v));
    if present || !clinic.spec.security.enforce_pod_security {
        return Ok(());
    }
    let body_labels = wanted;
    let patch = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": clinic.namespace, "labels": body_labels },
    });
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ctx.client.clone());
    ctx.metrics.record_write("apply");
    api.patch(&clinic.namespace, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|source| Error::Apply {
            kind: "Namespace".into(),
            name: clinic.namespace.clone(),
            source,
        })?;
    Ok(())
}

/// The message of the StatefulSet's newest `FailedCreate` event of the last two minutes: its
/// controller is being refused pods now (e.g. by Pod Security, after a field of the pod
/// template was changed outside the operator). Read only for a StatefulSet short of pods.
pub async fn pod_creation_failure(ctx: &Context, namespace: &str, statefulset: &str) -> Option<String> {
    use k8s_openapi::api::core::v1::Event;
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), namespace);
    let selector =
        format!("involvedObject.kind=StatefulSet,involvedObject.name={statefulset},reason=FailedCreate");
    let events = api.list(&ListParams::default().fields(&selector)).await.ok()?;
    let recent = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(120);
    events
        .items
        .into_iter()
        .filter_map(|e| {
            let at = e.last_timestamp.as_ref().map(|t| t.0).or(e.event_time.as_ref().map(|t| t.0))?;
            Some((at, e.message.unwrap_or_default()))
        })
        .filter(|(at, _)| *at >= recent)
        .max_by_key(|(at, _)| *at)
        .map(|(_, message)| message)
}

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

/// The cluster's StorageClasses as (name, default?, encrypts?), and when they were listed.
pub struct StorageClasses {
    classes: Vec<(String, bool, bool)>,
    listed: Instant,
}

/// The cluster's StorageClasses, listed at most once a minute.
async fn storage_classes(ctx: &Context) -> Vec<(String, bool, bool)> {
    let mut cache = ctx.storage_classes.lock().await;
    if let Some(cached) = cache.as_ref()
        && cached.listed.elapsed() < Duration::from_secs(60)
    {
        return cached.classes.clone();
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
                (sc.name_any(), default, storage_class_encrypts(&sc.parameters.clone().unwrap_or_default()))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    *cache = Some(StorageClasses { classes: list.clone(), listed: Instant::now() });
    list
}

/// Whether the data volumes (MariaDB and backend) are encrypted at rest: their StorageClasses
/// are attested by the platform's policy (`encryptingStorageClasses`) or recognised from their
/// parameters. The tenant's own `spec.security.storageEncrypted` is not evidence.
pub async fn storage_encrypted(ctx: &Context, clinic: &Clinic) -> bool {
    let classes = storage_classes(ctx).await;
    let encrypts = |name: Option<&String>| match name {
        Some(name) => ctx.policy.attests_encryption(name) || classes.iter().any(|(n, _, e)| n == name && *e),
        None => classes.iter().any(|(n, default, e)| *default && (*e || ctx.policy.attests_encryption(n))),
    };
    encrypts(clinic.spec.database.storage.storage_class_name.as_ref())
        && encrypts(clinic.spec.openmrs.backend.storage.storage_class_name.as_ref())
}

/// The controls behind `Compliant` are the fields of the status' `Compliance`.
impl crate::api::Compliance {
    /// (name in status, holds, what to do when it does not).
    pub fn list(&self) -> [(&'static str, bool, &'static str); 6] {
        [
            (
                "podSecurityRestricted",
                self.pod_security_restricted,
                "the namespace does not enforce Pod Security restricted",
            ),
            ("defaultDenyNetwork", self.default_deny_network, "the NetworkPolicies are not all in place"),
            ("tlsAtEdge", self.tls_at_edge, "no Ingress with TLS (spec.ingress)"),
            (
                "backupsWithinRpo",
                self.backups_within_rpo,
                "no successful backup within the RPO (see BackupReady)",
            ),
            (
                "dataResidency",
                self.data_residency,
                "no spec.residency pins the pods to regions or zones the platform's policy approves",
            ),
            (
                "encryptionAtRest",
                self.encryption_at_rest,
                "the data StorageClasses are not known to encrypt (the platform's policy lists encrypting StorageClasses)",
            ),
        ]
    }

    pub fn all_hold(&self) -> bool {
        self.list().iter().all(|(_, holds, _)| *holds)
    }
}
