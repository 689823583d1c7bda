//! Certificates of the test control plane: one CA, the API server's serving certificate, an
//! admin client certificate (group `system:masters`) and the service-account signing key.
//! rcgen writes X.509 v3 certificates, which rustls (the operator's TLS stack) requires.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};

/// Paths of the generated files.
#[derive(Debug, Clone, Default)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub apiserver_cert: PathBuf,
    pub apiserver_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
    /// The real node's kubelet identity (`system:node:<name>` in `system:nodes`).
    pub node_cert: PathBuf,
    pub node_key: PathBuf,
    /// The API server's client identity towards kubelets (logs, exec, port-forward).
    pub kubelet_client_cert: PathBuf,
    pub kubelet_client_key: PathBuf,
}

fn write(dir: &Path, name: &str, contents: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn name(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

/// Name of the real node (its kubelet's certificate names it).
pub const REAL_NODE_NAME: &str = "real-node-0";

fn client_cert(issuer: &Issuer<'_, &KeyPair>, cn: &str, org: Option<&str>) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(cn, org);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Generates everything under `dir`.
pub fn generate(dir: &Path) -> Result<Pki> {
    std::fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = name("clinic-e2e-ca", None);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec![
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
    ])?;
    server.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse()?));
    server.subject_alt_names.push(SanType::IpAddress("10.96.0.1".parse()?));
    server.distinguished_name = name("kube-apiserver", None);
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let (admin_cert, admin_key) = client_cert(&issuer, "e2e-admin", Some("system:masters"))?;
    let (node_cert, node_key) =
        client_cert(&issuer, &format!("system:node:{REAL_NODE_NAME}"), Some("system:nodes"))?;
    let (kubelet_client_cert, kubelet_client_key) =
        client_cert(&issuer, "kube-apiserver-kubelet-client", None)?;

    let sa_key = KeyPair::generate()?;

    Ok(Pki {
        ca_cert: write(dir, "ca.crt", &ca_cert.pem())?,
        ca_key: write(dir, "ca.key", &ca_key.serialize_pem())?,
        apiserver_cert: write(dir, "apiserver.crt", &server_cert.pem())?,
        apiserver_key: write(dir, "apiserver.key", &server_key.serialize_pem())?,
        admin_cert: write(dir, "admin.crt", &admin_cert)?,
        admin_key: write(dir, "admin.key", &admin_key)?,
        node_cert: write(dir, "node.crt", &node_cert)?,
        node_key: write(dir, "node.key", &node_key)?,
        kubelet_client_cert: write(dir, "kubelet-client.crt", &kubelet_client_cert)?,
        kubelet_client_key: write(dir, "kubelet-client.key", &kubelet_client_key)?,
        sa_key: write(dir, "sa.key", &sa_key.serialize_pem())?,
        sa_pub: write(dir, "sa.pub", &sa_key.public_key_pem())?,
    })
}
