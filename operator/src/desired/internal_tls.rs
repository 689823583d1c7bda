//! TLS inside the clinic: MariaDB's certificate and the backend's ([`Leaf`]), the names they
//! carry, cert-manager's `Certificate` when the spec names an issuer, and otherwise the clinic's
//! own CA and the certificates it signs (issued and renewed by the reconcile,
//! [`crate::reconcile::certificates`]).
//!
//! Every client verifies the server: the backend's JDBC driver against `ca.crt` and MariaDB's
//! Service name, the exporter against `ca.crt` and `127.0.0.1`, the gateway against `ca.crt`
//! and the backend's Service name.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{KeyToPath, Secret, SecretVolumeSource, Volume};
use kube::api::DynamicObject;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::json;

use super::*;
use crate::api::IssuerRef;

/// Where MariaDB finds `tls.crt`, `tls.key` and `ca.crt`, and the exporter `ca.crt`.
pub const TLS_DIR: &str = "/etc/mysql/tls";
/// Where the backend finds `ca.crt`.
pub const BACKEND_CA_DIR: &str = "/etc/openmrs/db-tls";
pub const KEY_CA_CERT: &str = "ca.crt";
pub const KEY_CA_KEY: &str = "ca.key";
pub const KEY_TLS_CERT: &str = "tls.crt";
pub const KEY_TLS_KEY: &str = "tls.key";
/// On MariaDB's pod template: the end of validity of the certificate it was started with.
/// MariaDB reads its certificate at start only, so a new one rolls the pod.
pub const REVISION_ANNOTATION: &str = "clinic.audioprothese.fr/db-tls-not-after";
/// On a certificate Secret the operator issued: its end of validity (RFC 3339), so that
/// renewal is decided from the metadata cache.
pub const NOT_AFTER_ANNOTATION: &str = "clinic.audioprothese.fr/not-after";
/// On the CA Secret: the SHA-256 of its certificate; on a certificate Secret: that of the CA
/// that signed it. A new CA (its Secret was lost) gets a new certificate signed by it.
pub const CA_FINGERPRINT_ANNOTATION: &str = "clinic.audioprothese.fr/ca-sha256";

/// Validity of the certificates the operator's CA signs, and how long before their end they
/// are renewed (cert-manager's defaults for the same).
pub const CERTIFICATE_DAYS: i64 = 90;
pub const RENEW_BEFORE_DAYS: i64 = 30;
/// Validity of the operator's CA.
pub const CA_DAYS: i64 = 3650;

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot make a key or sign a certificate: {0}")]
    Sign(#[from] rcgen::Error),
    #[error("the CA Secret has no usable {0}")]
    CaUnreadable(&'static str),
    #[error("a time outside what a certificate can hold")]
    Time,
}

/// A certificate the clinic's servers present inside the clinic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Leaf {
    /// MariaDB's (`spec.database.tls`): the backend and the exporter verify it.
    Database,
    /// The backend's TLS listener (`spec.openmrs.backend.tls`): the gateway verifies it.
    Backend,
}

impl Leaf {
    pub const ALL: [Leaf; 2] = [Leaf::Database, Leaf::Backend];

    /// How messages and logs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Leaf::Database => "database",
            Leaf::Backend => "backend",
        }
    }

    /// Whether the clinic's spec asks for it.
    pub fn wanted(self, clinic: &Clinic) -> bool {
        match self {
            Leaf::Database => clinic.database_tls(),
            Leaf::Backend => clinic.backend_tls(),
        }
    }

    /// The cert-manager issuer the spec names for it, if it is wanted.
    pub fn issuer_ref(self, clinic: &Clinic) -> Option<&IssuerRef> {
        let issuer = match self {
            Leaf::Database => clinic.spec.database.tls.issuer_ref.as_ref(),
            Leaf::Backend => clinic.spec.openmrs.backend.tls.issuer_ref.as_ref(),
        };
        issuer.filter(|_| self.wanted(clinic))
    }

    /// Whether the clinic's own CA signs it (wanted, no issuer named).
    pub fn runs_ca(self, clinic: &Clinic) -> bool {
        self.wanted(clinic) && self.issuer_ref(clinic).is_none()
    }

    /// The Secret with its certificate, key and CA (`tls.crt`, `tls.key`, `ca.crt`), from
    /// cert-manager or the clinic's CA.
    pub fn secret_name(self, clinic: &Clinic) -> String {
        match self {
            Leaf::Database => clinic.database_tls_secret(),
            Leaf::Backend => clinic.backend_tls_secret(),
        }
    }

    pub fn component(self) -> Component {
        match self {
            Leaf::Database => Component::Database,
            Leaf::Backend => Component::Backend,
        }
    }

    /// The Service its clients reach it by.
    fn service(self, clinic: &Clinic) -> String {
        match self {
            Leaf::Database => super::database::name(clinic),
            Leaf::Backend => super::backend::name(clinic),
        }
    }

    /// The names clients reach it by: its Service (short, namespaced and fully qualified) and
    /// `localhost`.
    pub fn dns_names(self, clinic: &Clinic) -> Vec<String> {
        let service = self.service(clinic);
        let ns = &clinic.namespace;
        vec![
            service.clone(),
            format!("{service}.{ns}"),
            format!("{service}.{ns}.svc"),
            format!("{service}.{ns}.svc.cluster.local"),
            "localhost".to_string(),
        ]
    }

    /// The addresses it also carries: MariaDB's exporter reaches it by loopback.
    fn ip_addresses(self) -> Vec<std::net::IpAddr> {
        match self {
            Leaf::Database => vec![std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
            Leaf::Backend => Vec::new(),
        }
    }
}

/// The cert-manager `Certificate`s of the leaves whose spec names an issuer.
pub fn certificates(clinic: &Clinic) -> Vec<DynamicObject> {
    Leaf::ALL
        .into_iter()
        .filter_map(|leaf| {
            let issuer = leaf.issuer_ref(clinic)?;
            let addresses: Vec<String> = leaf.ip_addresses().iter().map(ToString::to_string).collect();
            let mut spec = json!({
                "commonName": leaf.service(clinic),
                "dnsNames": leaf.dns_names(clinic),
                "duration": format!("{}h", CERTIFICATE_DAYS * 24),
                "renewBefore": format!("{}h", RENEW_BEFORE_DAYS * 24),
            });
            if !addresses.is_empty() {
                spec["ipAddresses"] = json!(addresses);
            }
            Some(super::ingress::cert_manager_certificate(
                clinic,
                leaf.secret_name(clinic),
                leaf.component(),
                issuer,
                spec,
            ))
        })
        .collect()
}

/// The SHA-256 of a PEM certificate's DER, in hex; `None` when it is not one.
pub fn fingerprint(cert_pem: &str) -> Option<String> {
    use sha2::{Digest, Sha256};
    let der = ::pem::parse(cert_pem).ok()?;
    Some(Sha256::digest(der.contents()).iter().map(|b| format!("{b:02x}")).collect())
}

/// When a PEM certificate stops being valid.
pub fn not_after(cert_pem: &str) -> Option<jiff::Timestamp> {
    let der = ::pem::parse(cert_pem).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.contents()).ok()?;
    jiff::Timestamp::from_second(cert.validity().not_after.timestamp()).ok()
}

fn offset(at: jiff::Timestamp) -> Result<time::OffsetDateTime, CertificateError> {
    time::OffsetDateTime::from_unix_timestamp(at.as_second()).map_err(|_| CertificateError::Time)
}

fn days(n: i64) -> jiff::SignedDuration {
    jiff::SignedDuration::from_hours(24 * n)
}

/// A new CA for the clinic: (certificate, key), both PEM.
pub fn new_ca(clinic: &Clinic, now: jiff::Timestamp) -> Result<(String, String), CertificateError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{}/{} clinic CA", clinic.namespace, clinic.name));
    dn.push(DnType::OrganizationName, "clinic-operator");
    params.distinguished_name = dn;
    // It signs server certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = offset(now - jiff::SignedDuration::from_mins(5))?;
    params.not_after = offset(now + days(CA_DAYS))?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A leaf's certificate, key and CA, as issued by the operator's CA.
#[derive(Debug, Clone)]
pub struct Issued {
    pub certificate: String,
    pub key: String,
    pub ca: String,
    pub not_after: jiff::Timestamp,
}

/// Signs `leaf`'s certificate with the clinic's CA, valid [`CERTIFICATE_DAYS`].
pub fn issue(
    clinic: &Clinic,
    leaf: Leaf,
    ca_cert: &str,
    ca_key: &str,
    now: jiff::Timestamp,
) -> Result<Issued, CertificateError> {
    let ca_key = KeyPair::from_pem(ca_key).map_err(|_| CertificateError::CaUnreadable(KEY_CA_KEY))?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert, &ca_key)
        .map_err(|_| CertificateError::CaUnreadable(KEY_CA_CERT))?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(leaf.dns_names(clinic))?;
    params.subject_alt_names.extend(leaf.ip_addresses().into_iter().map(SanType::IpAddress));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, leaf.service(clinic));
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let not_after = now + days(CERTIFICATE_DAYS);
    params.not_before = offset(now - jiff::SignedDuration::from_mins(5))?;
    params.not_after = offset(not_after)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Issued {
        certificate: cert.pem(),
        key: key.serialize_pem(),
        ca: ca_cert.to_string(),
        not_after: jiff::Timestamp::from_second(not_after.as_second()).map_err(|_| CertificateError::Time)?,
    })
}

/// Whether a certificate valid until `not_after` is due for renewal at `now`.
pub fn due(not_after: jiff::Timestamp, now: jiff::Timestamp) -> bool {
    now.duration_until(not_after) < days(RENEW_BEFORE_DAYS)
}

fn secret_with(
    clinic: &Clinic,
    name: String,
    component: Component,
    type_: &str,
    data: BTreeMap<String, String>,
) -> Secret {
    let mut meta = metadata(clinic, name, component);
    meta.owner_references = clinic.owner.clone().map(|o| vec![o]);
    Secret {
        metadata: meta,
        type_: Some(type_.into()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()),
        ..Default::default()
    }
}

/// The CA Secret `<name>-db-ca` (named when it signed MariaDB's certificate alone). Owned by
/// the clinic, whatever its deletion policy: no data depends on it (a new CA signs new
/// certificates).
pub fn ca_secret(clinic: &Clinic, cert: &str, key: &str) -> Secret {
    let mut secret = secret_with(
        clinic,
        clinic.clinic_ca_secret(),
        Component::Database,
        "Opaque",
        BTreeMap::from([(KEY_CA_CERT.into(), cert.into()), (KEY_CA_KEY.into(), key.into())]),
    );
    if let Some(fp) = fingerprint(cert) {
        secret.metadata.annotations = Some(BTreeMap::from([(CA_FINGERPRINT_ANNOTATION.into(), fp)]));
    }
    secret
}

/// A leaf's certificate Secret (`<name>-db-tls`, `<name>-backend-tls`), in the layout
/// cert-manager writes.
pub fn tls_secret(clinic: &Clinic, leaf: Leaf, issued: &Issued) -> Secret {
    let mut secret = secret_with(
        clinic,
        leaf.secret_name(clinic),
        leaf.component(),
        "kubernetes.io/tls",
        BTreeMap::from([
            (KEY_TLS_CERT.into(), issued.certificate.clone()),
            (KEY_TLS_KEY.into(), issued.key.clone()),
            (KEY_CA_CERT.into(), issued.ca.clone()),
        ]),
    );
    let mut annotations = BTreeMap::from([(NOT_AFTER_ANNOTATION.to_string(), issued.not_after.to_string())]);
    if let Some(fp) = fingerprint(&issued.ca) {
        annotations.insert(CA_FINGERPRINT_ANNOTATION.into(), fp);
    }
    secret.metadata.annotations = Some(annotations);
    secret
}

/// What `render` shows of the Secrets the operator's CA makes (placeholders, like the
/// generated Secrets'): the reconcile issues them ([`crate::reconcile::certificates`]).
pub fn placeholders(clinic: &Clinic) -> Vec<Secret> {
    if !clinic.runs_clinic_ca() {
        return Vec::new();
    }
    let placeholder = super::secrets::PLACEHOLDER.to_string();
    let shown = |name: String, component: Component, type_: &str, keys: &[&str]| {
        let mut secret = secret_with(clinic, name, component, type_, BTreeMap::new());
        secret.data = None;
        secret.string_data = Some(keys.iter().map(|k| (k.to_string(), placeholder.clone())).collect());
        secret
    };
    let mut out =
        vec![shown(clinic.clinic_ca_secret(), Component::Database, "Opaque", &[KEY_CA_CERT, KEY_CA_KEY])];
    for leaf in Leaf::ALL.into_iter().filter(|l| l.runs_ca(clinic)) {
        out.push(shown(
            leaf.secret_name(clinic),
            leaf.component(),
            "kubernetes.io/tls",
            &[KEY_TLS_CERT, KEY_TLS_KEY, KEY_CA_CERT],
        ));
    }
    out
}

/// A volume of a leaf's certificate Secret: every key (its server) or `ca.crt` alone (its
/// clients), readable by the pod's group only.
pub fn volume(clinic: &Clinic, leaf: Leaf, name: &str, ca_only: bool) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(leaf.secret_name(clinic)),
            items: ca_only
                .then(|| vec![KeyToPath { key: KEY_CA_CERT.into(), path: KEY_CA_CERT.into(), mode: None }]),
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Default::default()
    }
}
