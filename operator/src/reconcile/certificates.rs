//! Certificates inside the clinic (MariaDB's and the backend's, [`Leaf`]), before the children
//! are built, since the end of validity of MariaDB's goes into its pod template (MariaDB reads
//! it at start only; the backend's TLS proxy reloads a renewed one by itself). With the
//! clinic's own CA (no `issuerRef`), the CA is made once and each certificate issued, then
//! issued again `internal_tls::RENEW_BEFORE_DAYS` before it ends, or at once when the CA
//! changed. With cert-manager, a certificate is only read: cert-manager issues and renews it.
//! Renewal is decided from the Secrets' metadata (the cache's, or the API server's for one the
//! cache does not hold yet); a Secret's data is read only to issue, or once per new cert-manager
//! certificate.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tracing::info;

use super::caches::SecretRecord;
use super::context::Context;
use super::error::{Error, Result};
use crate::api::{CertificateStatus, ClinicPlatform, FIELD_MANAGER};
use crate::desired::internal_tls::{self, KEY_CA_CERT, KEY_CA_KEY, KEY_TLS_CERT, Leaf};
use crate::model::Clinic;

/// The clinic's CA (certificate, key) once this pass read or made it.
type CaKeys = Option<(String, String)>;

/// The status field that records `leaf`'s certificate.
fn recorded(clinic: &mut Clinic, leaf: Leaf) -> &mut Option<CertificateStatus> {
    match leaf {
        Leaf::Database => &mut clinic.database_certificate,
        Leaf::Backend => &mut clinic.backend_certificate,
    }
}

fn previous(cp: &ClinicPlatform, leaf: Leaf) -> Option<CertificateStatus> {
    let status = cp.status.as_ref()?;
    match leaf {
        Leaf::Database => status.database_certificate.clone(),
        Leaf::Backend => status.backend_certificate.clone(),
    }
}

/// Makes sure each certificate the spec asks for exists and is current (with the clinic's CA),
/// and records it in `clinic.database_certificate` and `clinic.backend_certificate` (`None`
/// when not asked for, or while cert-manager has not issued it yet). On failure, the last
/// certificates the status recorded stand.
pub async fn ensure(ctx: &Context, cp: &ClinicPlatform, clinic: &mut Clinic) -> Result<()> {
    for leaf in Leaf::ALL {
        let wanted = leaf.wanted(clinic);
        *recorded(clinic, leaf) = previous(cp, leaf).filter(|_| wanted);
    }
    let mut ca = None;
    let wanted: Vec<Leaf> = Leaf::ALL.into_iter().filter(|leaf| leaf.wanted(clinic)).collect();
    for leaf in wanted {
        let live = ctx.caches.secret(&clinic.namespace, &leaf.secret_name(clinic));
        let status = if leaf.runs_ca(clinic) && !clinic.spec.paused {
            Some(issued(ctx, clinic, leaf, live.as_ref(), &mut ca, jiff::Timestamp::now()).await?)
        } else {
            match live {
                Some(live) => read(ctx, clinic, leaf, &live, previous(cp, leaf)).await?,
                None => None,
            }
        };
        *recorded(clinic, leaf) = status;
    }
    Ok(())
}

fn issuer_text(clinic: &Clinic, leaf: Leaf) -> String {
    match leaf.issuer_ref(clinic) {
        Some(issuer) => format!("cert-manager {}/{}", issuer.kind.as_str(), issuer.name),
        None => format!("the clinic's CA (Secret {})", clinic.clinic_ca_secret()),
    }
}

/// `secret_version`: the resourceVersion of the Secret that holds it.
fn record(
    clinic: &Clinic,
    leaf: Leaf,
    not_after: jiff::Timestamp,
    secret_version: &str,
) -> CertificateStatus {
    CertificateStatus {
        not_after: not_after.to_string(),
        issuer: issuer_text(clinic, leaf),
        secret_version: secret_version.to_string(),
    }
}

/// `leaf`'s certificate the clinic's CA signed, issued now if it is missing, due or signed by
/// another CA.
async fn issued(
    ctx: &Context,
    clinic: &Clinic,
    leaf: Leaf,
    live: Option<&SecretRecord>,
    ca_keys: &mut CaKeys,
    now: jiff::Timestamp,
) -> Result<CertificateStatus> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &clinic.namespace);
    // The cache may lag behind the writes of the pass before (the CA and the certificate it
    // made): what it does not hold is read before anything is issued again, or MariaDB would
    // restart for nothing.
    let read = |name: String| {
        let api = api.clone();
        async move {
            api.get_metadata_opt(&name)
                .await
                .map(|found| found.map(|s| SecretRecord::of(&s.metadata)))
                .map_err(|source| Error::Read { what: format!("Secret {name}"), source })
        }
    };
    // The CA this pass already read or made (for the other certificate) is not looked for again.
    let memo_fingerprint = ca_keys.as_ref().and_then(|(cert, _)| internal_tls::fingerprint(cert));
    let ca = match (&memo_fingerprint, ctx.caches.secret(&clinic.namespace, &clinic.clinic_ca_secret())) {
        (Some(_), _) => None,
        (None, Some(cached)) => Some(cached),
        (None, None) => read(clinic.clinic_ca_secret()).await?,
    };
    let live = match live {
        Some(cached) => Some(cached.clone()),
        None => read(leaf.secret_name(clinic)).await?,
    };
    let live = live.as_ref();
    let ca_fingerprint =
        memo_fingerprint.as_deref().or_else(|| ca.as_ref().and_then(|m| m.ca_fingerprint.as_deref()));
    let ca_exists = memo_fingerprint.is_some() || ca.is_some();
    if let Some(live) = live {
        let not_after = live.not_after.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok());
        let signed_by = live.ca_fingerprint.as_deref();
        if let Some(not_after) = not_after
            && !internal_tls::due(not_after, now)
            && ca_fingerprint.is_some()
            && signed_by == ca_fingerprint
        {
            return Ok(record(clinic, leaf, not_after, &live.resource_version));
        }
    }
    let name = leaf.secret_name(clinic);
    let (ca_cert, ca_key) = match ca_keys {
        Some(keys) => keys.clone(),
        None => ca_keys.insert(certificate_authority(ctx, clinic, &name, ca_exists, now).await?).clone(),
    };
    let issued = internal_tls::issue(clinic, leaf, &ca_cert, &ca_key, now).map_err(|source| {
        Error::Certificate { secret: name.clone(), ca: clinic.clinic_ca_secret(), source }
    })?;
    let secret = internal_tls::tls_secret(clinic, leaf, &issued);
    let written = match live {
        None => {
            let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            ctx.metrics.record_write("create");
            api.create(&params, &secret).await
        }
        Some(live) => {
            // A merge patch of the data and annotations, on the version read above (one
            // changed since is issued again next pass). The chart's admission policy lets the
            // operator change the data of these certificate Secrets only.
            let patch = json!({
                "metadata": {
                    "resourceVersion": live.resource_version,
                    "annotations": secret.metadata.annotations,
                },
                "data": secret.data,
            });
            let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            ctx.metrics.record_write("merge");
            api.patch(&name, &params, &Patch::Merge(&patch)).await
        }
    }
    .map_err(|source| Error::WriteCertificate { name: name.clone(), source })?;
    info!(secret = %name, certificate = leaf.as_str(), not_after = %issued.not_after, "certificate issued");
    let version = written.metadata.resource_version.unwrap_or_default();
    Ok(record(clinic, leaf, issued.not_after, &version))
}

/// The clinic's CA: read when `exists` (its metadata was found), else made once. `leaf_secret`
/// is the certificate it is needed for, named in errors.
async fn certificate_authority(
    ctx: &Context,
    clinic: &Clinic,
    leaf_secret: &str,
    exists: bool,
    now: jiff::Timestamp,
) -> Result<(String, String)> {
    let name = clinic.clinic_ca_secret();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &clinic.namespace);
    let unreadable = |what| Error::Certificate {
        secret: leaf_secret.to_string(),
        ca: name.clone(),
        source: internal_tls::CertificateError::CaUnreadable(what),
    };
    let found = if exists { api.get_opt(&name).await } else { Ok(None) };
    match found {
        Ok(Some(secret)) => {
            let data = secret.data.unwrap_or_default();
            let text = |key: &str| data.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok());
            let cert = text(KEY_CA_CERT).filter(|c| internal_tls::fingerprint(c).is_some());
            return match (cert, text(KEY_CA_KEY)) {
                (Some(cert), Some(key)) => Ok((cert, key)),
                (None, _) => Err(unreadable(KEY_CA_CERT)),
                (_, None) => Err(unreadable(KEY_CA_KEY)),
            };
        }
        Ok(None) => {}
        Err(source) => return Err(Error::Read { what: format!("Secret {name}"), source }),
    }
    let (cert, key) = internal_tls::new_ca(clinic, now).map_err(|source| Error::Certificate {
        secret: leaf_secret.to_string(),
        ca: name.clone(),
        source,
    })?;
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    ctx.metrics.record_write("create");
    api.create(&params, &internal_tls::ca_secret(clinic, &cert, &key))
        .await
        .map_err(|source| Error::WriteCertificate { name: name.clone(), source })?;
    info!(secret = %name, "clinic CA created");
    Ok((cert, key))
}

/// A certificate cert-manager issued: its end of validity, read from the Secret once per
/// version of it.
async fn read(
    ctx: &Context,
    clinic: &Clinic,
    leaf: Leaf,
    live: &SecretRecord,
    previous: Option<CertificateStatus>,
) -> Result<Option<CertificateStatus>> {
    if let Some(previous) = previous.filter(|p| *p.secret_version == *live.resource_version) {
        return Ok(Some(previous));
    }
    if let Some(not_after) = live.not_after.as_deref().and_then(|t| t.parse().ok()) {
        return Ok(Some(record(clinic, leaf, not_after, &live.resource_version)));
    }
    let name = leaf.secret_name(clinic);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &clinic.namespace);
    let secret =
        api.get_opt(&name).await.map_err(|source| Error::Read { what: format!("Secret {name}"), source })?;
    let not_after = secret
        .as_ref()
        .and_then(|s| s.data.as_ref()?.get(KEY_TLS_CERT))
        .and_then(|v| std::str::from_utf8(&v.0).ok())
        .and_then(internal_tls::not_after);
    Ok(not_after.map(|t| record(clinic, leaf, t, &live.resource_version)))
}
