//! MariaDB's TLS as the builders declare it (spec.database.tls): the server's settings, the
//! certificate and who verifies it. The certificates the operator's CA signs are checked with
//! OpenSSL (`openssl verify`, as a TLS client would: chain, purpose, host name and IP). The
//! real node proves the rest: plaintext refused, TLS with the clinic's CA accepted, and the
//! stand-in backend connecting as MariaDB Connector/J does with `sslMode=verify-full`.

mod common;

use std::process::Command;

use clinic_operator::desired::internal_tls::{self, Leaf};
use clinic_operator::desired::{self, SecretValues};
use clinic_operator::policy::Policy;
use common::{clinic, mounted_secret, tempdir, typed};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec};
use kube::api::DynamicObject;

fn objects(spec: &str) -> Vec<DynamicObject> {
    desired::objects(&clinic(spec), &SecretValues::Placeholder)
}

fn pod(objects: &[DynamicObject], name: &str) -> PodSpec {
    let sts: StatefulSet = typed(objects, "StatefulSet", name);
    sts.spec.unwrap().template.spec.unwrap()
}

fn container<'a>(pod: &'a PodSpec, name: &str) -> &'a Container {
    pod.containers.iter().find(|c| c.name == name).unwrap()
}

fn env(c: &Container, name: &str) -> Option<String> {
    c.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone())
}

#[test]
fn mariadb_refuses_plaintext_and_every_client_verifies_it() {
    let objects = objects("  {}\n");
    let config: ConfigMap = typed(&objects, "ConfigMap", "lyon-mariadb-config");
    let data = config.data.unwrap();
    let cnf = &data["clinic.cnf"];
    for line in [
        "ssl_cert = /etc/mysql/tls/tls.crt",
        "ssl_key = /etc/mysql/tls/tls.key",
        "ssl_ca = /etc/mysql/tls/ca.crt",
        "require_secure_transport = ON",
        "tls_version = TLSv1.2,TLSv1.3",
    ] {
        assert!(cnf.lines().any(|l| l == line), "{line} in {cnf}");
    }
    // The exporter's file is not a `.cnf` MariaDB's includedir would read.
    assert_eq!(data[desired::database::EXPORTER_CNF_KEY], "[client]\nssl-ca = /etc/mysql/tls/ca.crt\n");

    let db = pod(&objects, "lyon-mariadb");
    let mariadb = container(&db, "mariadb");
    assert_eq!(mounted_secret(&db, mariadb, "/etc/mysql/tls"), ("lyon-db-tls".into(), None));
    let exporter = container(&db, "mysqld-exporter");
    assert!(exporter.args.iter().flatten().any(|a| a == "--config.my-cnf=/etc/mysqld-exporter/my.cnf"));
    assert_eq!(
        mounted_secret(&db, exporter, "/etc/mysql/tls"),
        ("lyon-db-tls".into(), Some(vec!["ca.crt".into()]))
    );

    let backend = pod(&objects, "lyon-backend");
    let openmrs = container(&backend, "openmrs");
    assert_eq!(env(openmrs, "OMRS_DB").as_deref(), Some("mariadb"));
    let url = env(openmrs, "OMRS_EXTRA_CONNECTION_URL").unwrap();
    assert!(url.starts_with("jdbc:mariadb://lyon-mariadb:3306/openmrs?"), "{url}");
    assert!(url.ends_with("&sslMode=verify-full&serverSslCert=/etc/openmrs/db-tls/ca.crt"), "{url}");
    assert_eq!(env(openmrs, "OMRS_DB_URL"), Some(url));
    // The backend gets the CA, never MariaDB's key.
    assert_eq!(
        mounted_secret(&backend, openmrs, "/etc/openmrs/db-tls"),
        ("lyon-db-tls".into(), Some(vec!["ca.crt".into()]))
    );
    // No cert-manager Certificate: the clinic's CA signs it.
    assert!(!objects.iter().any(|o| o.types.as_ref().unwrap().kind == "Certificate"));
}

#[test]
fn without_tls_nothing_of_it_is_declared() {
    let objects = objects("  database:\n    tls:\n      enabled: false\n");
    let config: ConfigMap = typed(&objects, "ConfigMap", "lyon-mariadb-config");
    let data = config.data.unwrap();
    assert!(!data["clinic.cnf"].contains("ssl"));
    assert!(!data.contains_key(desired::database::EXPORTER_CNF_KEY));
    let db = pod(&objects, "lyon-mariadb");
    assert!(
        !db.volumes
            .iter()
            .flatten()
            .any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("lyon-db-tls"))
    );
    assert!(
        !container(&db, "mysqld-exporter").args.iter().flatten().any(|a| a.starts_with("--config.my-cnf"))
    );
    let backend = pod(&objects, "lyon-backend");
    let openmrs = container(&backend, "openmrs");
    assert_eq!(env(openmrs, "OMRS_DB").as_deref(), Some("mysql"));
    let url = env(openmrs, "OMRS_EXTRA_CONNECTION_URL").unwrap();
    assert!(url.starts_with("jdbc:mysql://lyon-mariadb:3306/openmrs?") && !url.contains("ssl"), "{url}");
    assert_eq!(env(openmrs, "OMRS_EXTRA_CONNECTION_DRIVER__CLASS").as_deref(), Some("com.mysql.jdbc.Driver"));
}

#[test]
fn a_cert_manager_issuer_gets_a_certificate_for_every_name_clients_use() {
    let objects =
        objects("  database:\n    tls:\n      issuerRef:\n        name: clinic-ca\n        kind: Issuer\n");
    let certificate = objects
        .iter()
        .find(|o| {
            o.types.as_ref().unwrap().kind == "Certificate"
                && o.metadata.name.as_deref() == Some("lyon-db-tls")
        })
        .expect("a Certificate");
    let spec = &certificate.data["spec"];
    assert_eq!(spec["secretName"], "lyon-db-tls");
    assert_eq!(
        spec["dnsNames"],
        serde_json::json!([
            "lyon-mariadb",
            "lyon-mariadb.clinic-lyon",
            "lyon-mariadb.clinic-lyon.svc",
            "lyon-mariadb.clinic-lyon.svc.cluster.local",
            "localhost"
        ])
    );
    assert_eq!(spec["ipAddresses"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(
        spec["issuerRef"],
        serde_json::json!({"name": "clinic-ca", "kind": "Issuer", "group": "cert-manager.io"})
    );
    assert_eq!(spec["usages"], serde_json::json!(["digital signature", "key encipherment", "server auth"]));
    assert!(
        desired::optional_children(&clinic(
            "  database:\n    tls:\n      issuerRef:\n        name: clinic-ca\n"
        ))
        .iter()
        .any(|(_, ar, name)| ar.kind == "Certificate" && name == "lyon-db-tls")
    );
}

#[test]
fn a_cluster_issuer_the_policy_does_not_list_is_refused() {
    let policy: Policy = serde_yaml::from_str("clusterIssuers: [platform-ca]\n").unwrap();
    let listed = clinic("  database:\n    tls:\n      issuerRef:\n        name: platform-ca\n");
    assert!(policy.admit(listed).is_ok());
    let other = clinic("  database:\n    tls:\n      issuerRef:\n        name: someone-elses-ca\n");
    let refused = policy.admit(other).unwrap_err();
    assert_eq!(refused.field, "spec.database.tls.issuerRef.name");
    assert!(refused.message.contains("platform-ca"), "{}", refused.message);
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).output().expect("openssl runs");
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn the_clinics_ca_signs_a_server_certificate_openssl_accepts_for_mariadbs_names() {
    let c = clinic("  {}\n");
    let now = jiff::Timestamp::now();
    let (ca_cert, ca_key) = internal_tls::new_ca(&c, now).unwrap();
    let issued = internal_tls::issue(&c, Leaf::Database, &ca_cert, &ca_key, now).unwrap();
    let dir = tempdir("db-tls");
    let ca = dir.join("ca.crt");
    let cert = dir.join("tls.crt");
    std::fs::write(&ca, &ca_cert).unwrap();
    std::fs::write(&cert, &issued.certificate).unwrap();
    let (ca, cert) = (ca.to_str().unwrap(), cert.to_str().unwrap());
    for name in ["lyon-mariadb", "lyon-mariadb.clinic-lyon.svc", "localhost"] {
        let (ok, out) =
            openssl(&["verify", "-CAfile", ca, "-purpose", "sslserver", "-verify_hostname", name, cert]);
        assert!(ok, "{name}: {out}");
    }
    let (ok, out) =
        openssl(&["verify", "-CAfile", ca, "-purpose", "sslserver", "-verify_ip", "127.0.0.1", cert]);
    assert!(ok, "{out}");
    // Another clinic's name, and a certificate from another CA, are refused.
    let (ok, _) = openssl(&["verify", "-CAfile", ca, "-verify_hostname", "nice-mariadb", cert]);
    assert!(!ok, "a name the certificate does not carry");
    let (other_ca, _) = internal_tls::new_ca(&c, now).unwrap();
    let other = dir.join("other.crt");
    std::fs::write(&other, other_ca).unwrap();
    let (ok, _) = openssl(&["verify", "-CAfile", other.to_str().unwrap(), cert]);
    assert!(!ok, "another CA");
    // The key matches the certificate, and the CA may sign server certificates only.
    let key = dir.join("tls.key");
    std::fs::write(&key, &issued.key).unwrap();
    let (_, from_cert) = openssl(&["x509", "-in", cert, "-noout", "-pubkey"]);
    let (_, from_key) = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    assert_eq!(from_cert, from_key);
    let (_, text) = openssl(&["x509", "-in", ca, "-noout", "-text"]);
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");

    // 90 days, read back the way the reconcile reads a cert-manager certificate.
    let not_after = internal_tls::not_after(&issued.certificate).unwrap();
    assert_eq!(not_after, issued.not_after);
    let days = now.duration_until(not_after).as_hours() / 24;
    assert!((89..=90).contains(&days), "{days} days");
    assert!(!internal_tls::due(not_after, now));
    assert!(internal_tls::due(not_after, now + jiff::SignedDuration::from_hours(24 * 61)));
    assert_eq!(internal_tls::fingerprint(&ca_cert).unwrap().len(), 64);
    assert_eq!(internal_tls::fingerprint("not a certificate"), None);
}

#[test]
fn the_certificate_secrets_hold_what_mariadb_and_cert_managers_layout_name() {
    let c = clinic("  {}\n");
    let now = jiff::Timestamp::now();
    let (ca_cert, ca_key) = internal_tls::new_ca(&c, now).unwrap();
    let issued = internal_tls::issue(&c, Leaf::Database, &ca_cert, &ca_key, now).unwrap();
    let tls = internal_tls::tls_secret(&c, Leaf::Database, &issued);
    assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
    let keys: Vec<&String> = tls.data.as_ref().unwrap().keys().collect();
    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
    let annotations = tls.metadata.annotations.unwrap();
    assert_eq!(annotations[internal_tls::NOT_AFTER_ANNOTATION], issued.not_after.to_string());
    assert_eq!(
        annotations[internal_tls::CA_FINGERPRINT_ANNOTATION],
        internal_tls::fingerprint(&ca_cert).unwrap()
    );
    let ca = internal_tls::ca_secret(&c, &ca_cert, &ca_key);
    assert_eq!(ca.metadata.name.as_deref(), Some("lyon-db-ca"));
    // Both go with the clinic, whatever its deletion policy: no data depends on them.
    assert_eq!(ca.metadata.owner_references.unwrap()[0].uid, common::CLINIC_UID);
    // A tampered CA is refused with the key it lacks, not a panic.
    let broken = internal_tls::issue(&c, Leaf::Database, &ca_cert, "garbage", now).unwrap_err();
    assert!(broken.to_string().contains("ca.key"), "{broken}");
}
