//! Certificates: MariaDB's, before the children are built, since the end of validity of the
//! certificate goes into MariaDB's pod template (MariaDB reads it at start only). With the
//! clinic's own CA (no `spec.database.tls.issuerRef`), the CA is made once and the certificate
//! issued, then issued again `database_tls::RENEW_BEFORE_DAYS` before it ends, or at once when
//! the CA changed. With cert-manager, the certificate is only read: cert-manager issues and
//! renews it. Renewal is decided from the Secrets' metadata (the cache's, or the API server's
//! for one the cache does not hold yet); a Secret's data is read only to issue, or once per new
//! cert-manager certificate.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tracing::info;

use super::context::Context;
use super::error::{Error, Result};
use crate::api::{ClinicPlatform, DatabaseCertificateStatus, FIELD_MANAGER};
use crate::desired::database_tls::{
    self, CA_FINGERPRINT_ANNOTATION, KEY_CA_CERT, KEY_CA_KEY, KEY_TLS_CERT, NOT_AFTER_ANNOTATION,
};
use crate::model::Clinic;

/// Makes sure MariaDB's certificate exists and is current (with the clinic's CA), and records
/// it in `clinic.database_certificate` (`None` without TLS or while cert-manager has not issued
/// it yet). On failure, the last certificate the status recorded stands.
pub async fn ensure(ctx: &Context, cp: &ClinicPlatform, clinic: &mut Clinic) -> Result<()> {
    let previous = cp.status.as_ref().and_then(|s| s.database_certificate.clone());
    clinic.database_certificate = previous.clone().filter(|_| clinic.database_tls());
    if !clinic.database_tls() {
        return Ok(());
    }
    let live =
        ctx.caches.secret(&clinic.namespace, &clinic.database_tls_secret()).map(|s| s.metadata.clone());
    let status = if clinic.runs_database_ca() && !clinic.spec.paused {
        Some(issued(ctx, clinic, live.as_ref(), jiff::Timestamp::now()).await?)
    } else {
        match live {
            Some(live) => read(ctx, clinic, &live, previous).await?,
            None => None,
        }
    };
    clinic.database_certificate = status;
    Ok(())
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn issuer_text(clinic: &Clinic) -> String {
    match &clinic.spec.database.tls.issuer_ref {
        Some(issuer) => format!("cert-manager {}/{}", issuer.kind.as_str(), issuer.name),
        None => format!("the clinic's CA (Secret {})", clinic.database_ca_secret()),
    }
}

fn record(clinic: &Clinic, not_after: jiff::Timestamp, meta: &ObjectMeta) -> DatabaseCertificateStatus {
    DatabaseCertificateStatus {
        not_after: not_after.to_string(),
        issuer: issuer_text(clinic),
        secret_version: meta.resource_version.clone().unwrap_or_default(),
    }
}

/// The certificate the clinic's CA signed, issued now if it is missing, due or signed by
/// another CA.
async fn issued(
    ctx: &Context,
    clinic: &Clinic,
    live: Option<&ObjectMeta>,
    now: jiff::Timestamp,
) -> Result<DatabaseCertificateStatus> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &clinic.namespace);
    // The cache may lag behind the writes of the pass before (the CA and the certificate it
    // made): what it does not hold is read before anything is issued again, or MariaDB would
    // restart for nothing.
    let read = |name: String| {
        let api = api.clone();
        async move {
            api.get_metadata_opt(&name)
                .await
                .map(|found| found.map(|s| s.metadata))
                .map_err(|source| Error::Read { what: format!("Secret {name}"), source })
        }
    };
    let ca = match ctx.caches.secret(&clinic.namespace, &clinic.database_ca_secret()) {
        Some(cached) => Some(cached.metadata.clone()),
        None => read(clinic.database_ca_secret()).await?,
    };
    let live = match live {
        Some(cached) => Some(cached.clone()),
        None => read(clinic.database_tls_secret()).await?,
    };
    let live = live.as_ref();
    let ca_fingerprint = ca.as_ref().and_then(|m| annotation(m, CA_FINGERPRINT_ANNOTATION));
    if let Some(live) = live {
        let not_after =
            annotation(live, NOT_AFTER_ANNOTATION).and_then(|t| t.parse::<jiff::Timestamp>().ok());
        let signed_by = annotation(live, CA_FINGERPRINT_ANNOTATION);
        if let Some(not_after) = not_after
            && !database_tls::due(not_after, now)
            && ca_fingerprint.is_some()
            && signed_by == ca_fingerprint
        {
            return Ok(record(clinic, not_after, live));
        }
    }
    let (ca_cert, ca_key) = certificate_authority(ctx, clinic, ca.is_some(), now).await?;
    let name = clinic.database_tls_secret();
    let issued = database_tls::issue(clinic, &ca_cert, &ca_key, now).map_err(|source| {
        Error::Certificate { secret: name.clone(), ca: clinic.database_ca_secret(), source }
    })?;
    let secret = database_tls::tls_secret(clinic, &issued);
    let written = match live {
        None => {
            let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            ctx.metrics.record_write("create");
            api.create(&params, &secret).await
        }
        Some(live) => {
            // A merge patch of the data and annotations, on the version read above (one
            // changed since is issued again next pass). The chart's admission policy lets the
            // operator change the data of this Secret only.
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
    info!(secret = %name, not_after = %issued.not_after, "database certificate issued");
    Ok(record(clinic, issued.not_after, &written.metadata))
}

/// The clinic's CA: read when `exists` (its metadata was found), else made once.
async fn certificate_authority(
    ctx: &Context,
    clinic: &Clinic,
    exists: bool,
    now: jiff::Timestamp,
) -> Result<(String, String)> {
    let name = clinic.database_ca_secret();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &clinic.namespace);
    let unreadable = |what| Error::Certificate {
        secret: clinic.database_tls_secret(),
        ca: name.clone(),
        source: database_tls::CertificateError::CaUnreadable(what),
    };
    let found = if exists { api.get_opt(&name).await } else { Ok(None) };
    match found {
        Ok(Some(secret)) => {
            let data = secret.data.unwrap_or_default();
            let text = |key: &str| data.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok());
            let cert = text(KEY_CA_CERT).filter(|c| database_tls::fingerprint(c).is_some());
            return match (cert, text(KEY_CA_KEY)) {
                (Some(cert), Some(key)) => Ok((cert, key)),
                (None, _) => Err(unreadable(KEY_CA_CERT)),
                (_, None) => Err(unreadable(KEY_CA_KEY)),
            };
        }
        Ok(None) => {}
        Err(source) => return Err(Error::Read { what: format!("Secret {name}"), source }),
    }
    let (cert, key) = database_tls::new_ca(clinic, now).map_err(|source| Error::Certificate {
        secret: clinic.database_tls_secret(),
        ca: name.clone(),
        source,
    })?;
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    ctx.metrics.record_write("create");
    api.create(&params, &database_tls::ca_secret(clinic, &cert, &key))
        .await
        .map_err(|source| Error::WriteCertificate { name: name.clone(), source })?;
    info!(secret = %name, "database CA created");
    Ok((cert, key))
}

/// A certificate cert-manager issued: its end of validity, read from the Secret once per
/// version of it.
async fn read(
    ctx: &Context,
    clinic: &Clinic,
    live: &ObjectMeta,
    previous: Option<DatabaseCertificateStatus>,
) -> Result<Option<DatabaseCertificateStatus>> {
    if let Some(previous) = previous.filter(|p| Some(&p.secret_version) == live.resource_version.as_ref()) {
        return Ok(Some(previous));
    }
    if let Some(not_after) = annotation(live, NOT_AFTER_ANNOTATION).and_then(|t| t.parse().ok()) {
        return Ok(Some(record(clinic, not_after, live)));
    }
    let name = clinic.database_tls_secret();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &clinic.namespace);
    let secret =
        api.get_opt(&name).await.map_err(|source| Error::Read { what: format!("Secret {name}"), source })?;
    let not_after = secret
        .as_ref()
        .and_then(|s| s.data.as_ref()?.get(KEY_TLS_CERT))
        .and_then(|v| std::str::from_utf8(&v.0).ok())
        .and_then(database_tls::not_after);
    Ok(not_after.map(|t| record(clinic, t, live)))
}
