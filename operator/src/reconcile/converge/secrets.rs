//! The generated Secrets: created once, never applied, never regenerated; and the refusal of
//! a credentials source the running database was not initialised with.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tracing::{debug, info};

use crate::api::{DeletionPolicy, FIELD_MANAGER};
use crate::desired::secrets::{self, GeneratedSecret, SecretValues};
use crate::model::Clinic;
use crate::reconcile::caches::SecretRecord;
use crate::reconcile::context::Context;
use crate::reconcile::error::{Error, Result};

/// Refuses a credentials source other than the one the running database was initialised with
/// (`status.databaseCredentialsSecret`), unless annotation
/// [`crate::api::CREDENTIALS_MOVED_ANNOTATION`] names the new one: MariaDB keeps its own copy of
/// the passwords, and the new Secret's would not open it.
pub fn credentials_source_unchanged(
    ctx: &Context,
    cp: &crate::api::ClinicPlatform,
    clinic: &Clinic,
) -> Result<()> {
    let Some(from) = cp.status.as_ref().and_then(|s| s.database_credentials_secret.clone()) else {
        return Ok(());
    };
    let to = clinic.db_credentials_secret();
    let database = crate::desired::database::name(clinic);
    let initialised = ctx.caches.workload("StatefulSet", &clinic.namespace, &database).is_some();
    let moved = cp.annotations().get(crate::api::CREDENTIALS_MOVED_ANNOTATION) == Some(&to);
    if from == to || !initialised || moved {
        return Ok(());
    }
    Err(Error::CredentialsSwitch { from, to })
}

/// Makes sure the generated Secrets exist, creating each one once. Returns how many were created.
/// `encryption_recorded` is the encryption Secret the status records the data as encrypted with.
pub async fn ensure_secrets(
    ctx: &Context,
    clinic: &Clinic,
    encryption_recorded: Option<&str>,
) -> Result<usize> {
    let mut created = 0;
    let mut data = DataOnClaim::default();
    for generated in secrets::generated(clinic) {
        match ctx.caches.secret(&clinic.namespace, &generated.name) {
            Some(live) => adopt_secret(ctx, clinic, &generated, &live).await?,
            None => {
                if create_secret(ctx, clinic, &generated, encryption_recorded, &mut data).await? {
                    created += 1;
                }
            }
        }
    }
    Ok(created)
}

/// Generated Secrets outlive a `Retain` clinic: they are the only key to the retained data. So
/// they carry an owner reference only under a confirmed `Delete`.
fn secret_owner_references(
    clinic: &Clinic,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    match clinic.deletion_policy() {
        DeletionPolicy::Delete => clinic.owner_references().unwrap_or_default(),
        DeletionPolicy::Retain => vec![],
    }
}

/// Whether the database's first volume claim exists, read once in a pass for all the Secrets
/// it guards.
#[derive(Default)]
struct DataOnClaim(Option<bool>);

impl DataOnClaim {
    async fn exists(&mut self, ctx: &Context, clinic: &Clinic, claim: &str) -> Result<bool> {
        if let Some(known) = self.0 {
            return Ok(known);
        }
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &clinic.namespace);
        let found = pvcs
            .get_metadata_opt(claim)
            .await
            .map_err(|source| Error::Read { what: format!("PersistentVolumeClaim {claim}"), source })?
            .is_some();
        Ok(*self.0.insert(found))
    }
}

async fn create_secret(
    ctx: &Context,
    clinic: &Clinic,
    generated: &GeneratedSecret,
    encryption_recorded: Option<&str>,
    data_on_claim: &mut DataOnClaim,
) -> Result<bool> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &clinic.namespace);
    // Credentials for a database that already holds data cannot be invented again: neither the
    // database's nor the OpenMRS admin password, which the first start wrote into it; nor keys
    // the data was encrypted with (an older, unencrypted database gets its first keys). Where
    // that data exists, the Secret must too: the cache may lag, so it is looked for.
    let claim = crate::desired::database::first_data_claim(clinic);
    let encryption = generated.name == clinic.encryption_secret();
    let guarded = generated.name == clinic.db_credentials_secret()
        || (clinic.generates_admin_password && generated.name == clinic.admin_password().secret)
        || (encryption && encryption_recorded == Some(generated.name.as_str()));
    if guarded && data_on_claim.exists(ctx, clinic, &claim).await? {
        return match api.get_metadata_opt(&generated.name).await {
            Ok(Some(existing)) => adopt_secret(ctx, clinic, generated, &SecretRecord::of(&existing.metadata))
                .await
                .map(|()| false),
            Ok(None) if encryption => Err(Error::EncryptionKeyLost { secret: generated.name.clone(), claim }),
            Ok(None) => Err(Error::CredentialsLost { secret: generated.name.clone(), claim }),
            Err(source) => Err(Error::Read { what: format!("Secret {}", generated.name), source }),
        };
    }
    // No read before the create: a new clinic's Secrets do not exist, and a 409 says when one
    // does (the cache lagging, a restored namespace, another replica): then it is adopted.
    let mut secret = secrets::secret(clinic, generated, SecretValues::Generate);
    secret.metadata.owner_references = Some(secret_owner_references(clinic));
    ctx.metrics.record_write("create");
    match api
        .create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &secret)
        .await
    {
        Ok(_) => {
            info!(secret = %generated.name, "generated Secret created");
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            match api.get_metadata_opt(&generated.name).await {
                Ok(Some(existing)) => {
                    adopt_secret(ctx, clinic, generated, &SecretRecord::of(&existing.metadata))
                        .await
                        .map(|()| false)
                }
                // Gone again between the create and the read: the next pass creates it.
                Ok(None) => Ok(false),
                Err(source) => Err(Error::Read { what: format!("Secret {}", generated.name), source }),
            }
        }
        Err(source) => Err(Error::CreateSecret { name: generated.name.clone(), source }),
    }
}

/// An existing generated Secret keeps its values; only labels and owner references are ours.
async fn adopt_secret(
    ctx: &Context,
    clinic: &Clinic,
    generated: &GeneratedSecret,
    live: &SecretRecord,
) -> Result<()> {
    let labels = clinic.labels(crate::model::Component::Platform);
    let owners = secret_owner_references(clinic);
    let labels_ok = live.has_labels(&labels);
    let live_owner_uids: BTreeSet<&str> = live.owner_uids.iter().map(|uid| &**uid).collect();
    let owners_ok = owners.iter().all(|o| live_owner_uids.contains(o.uid.as_str()))
        && (clinic.deletion_policy() == DeletionPolicy::Delete
            || clinic.owner.as_ref().is_none_or(|o| !live_owner_uids.contains(o.uid.as_str())));
    if labels_ok && owners_ok {
        return Ok(());
    }
    // A merge patch: labels are added, the owner list is replaced as a whole (so a switch from
    // Delete to Retain really drops the owner reference), and the data is never in the body.
    let patch = json!({ "metadata": { "labels": labels, "ownerReferences": owners } });
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &clinic.namespace);
    ctx.metrics.record_write("merge");
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    api.patch(&generated.name, &params, &Patch::Merge(&patch)).await.map_err(|source| Error::Patch {
        kind: "Secret".into(),
        name: generated.name.clone(),
        source,
    })?;
    debug!(secret = %generated.name, "adopted existing Secret");
    Ok(())
}
