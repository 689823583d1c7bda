//! Generated credentials: the MariaDB root and application passwords and the OpenMRS admin
//! password. Created once, never regenerated; a user-provided Secret replaces each.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::OsRng;
use rand::{RngCore, TryRngCore};

use super::metadata;
use crate::model::{Clinic, Component};

/// Length of generated passwords: 48 alphanumeric characters (~285 bits).
pub const PASSWORD_LENGTH: usize = 48;
/// Database user OpenMRS connects as.
pub const DB_USERNAME: &str = "openmrs";
/// Keys of the database credentials Secret.
pub const KEY_ROOT_PASSWORD: &str = "root-password";
pub const KEY_USERNAME: &str = "username";
pub const KEY_PASSWORD: &str = "password";
/// Key of the encryption Secret holding MariaDB's key file (`<id>;<hex key>` lines).
pub const KEY_KEYFILE: &str = "keyfile";
/// Key of the encryption Secret holding the passphrase the dump is encrypted with.
pub const KEY_DUMP_PASSPHRASE: &str = "dump-passphrase";

/// A Secret the operator generates, with the keys it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedSecret {
    pub name: String,
    /// Its keys, each with how its value is made.
    pub keys: Vec<(&'static str, KeySource)>,
}

/// How the value of one key of a generated Secret is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    RandomPassword,
    Fixed(&'static str),
    /// A MariaDB key file with one random AES-256 key (id 1).
    EncryptionKeyFile,
    /// The SQL that keeps the exporter's database account in step with the `password` key of
    /// the same Secret.
    ExporterInitSql,
}

/// What goes into generated Secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretValues {
    /// Fresh CSPRNG passwords, for the one time a Secret is created.
    Generate,
    /// A visible placeholder: `render` output can go into a pull request.
    Placeholder,
}

/// Placeholder shown by `render` instead of a password.
pub const PLACEHOLDER: &str = "<generated-on-first-reconcile>";

/// The Secrets `clinic` needs the operator to generate.
pub fn generated(clinic: &Clinic) -> Vec<GeneratedSecret> {
    let mut out = Vec::new();
    if clinic.generates_db_credentials {
        out.push(GeneratedSecret {
            name: clinic.db_credentials_secret(),
            keys: vec![
                (KEY_ROOT_PASSWORD, KeySource::RandomPassword),
                (KEY_USERNAME, KeySource::Fixed(DB_USERNAME)),
                (KEY_PASSWORD, KeySource::RandomPassword),
            ],
        });
    }
    if super::monitoring::enabled(clinic) {
        out.push(GeneratedSecret {
            name: super::monitoring::exporter_secret_name(clinic),
            keys: vec![
                ("password", KeySource::RandomPassword),
                (super::monitoring::KEY_INIT_SQL, KeySource::ExporterInitSql),
            ],
        });
    }
    if clinic.spec.database.encrypt_at_rest {
        out.push(GeneratedSecret {
            name: clinic.encryption_secret(),
            keys: vec![
                (KEY_KEYFILE, KeySource::EncryptionKeyFile),
                (KEY_DUMP_PASSPHRASE, KeySource::RandomPassword),
            ],
        });
    }
    if clinic.generates_admin_password {
        let admin = clinic.admin_password();
        out.push(GeneratedSecret { name: admin.secret, keys: vec![("password", KeySource::RandomPassword)] });
    }
    out
}

/// The Secret object for one generated Secret.
pub fn secret(clinic: &Clinic, generated: &GeneratedSecret, values: SecretValues) -> Secret {
    let mut data: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in &generated.keys {
        let v = match (value, values) {
            (KeySource::Fixed(v), _) => (*v).to_string(),
            (KeySource::RandomPassword, SecretValues::Placeholder) => PLACEHOLDER.to_string(),
            (KeySource::RandomPassword, SecretValues::Generate) => random_password(),
            (KeySource::EncryptionKeyFile, SecretValues::Placeholder) => format!("1;{PLACEHOLDER}\n"),
            (KeySource::EncryptionKeyFile, SecretValues::Generate) => random_key_file(),
            // Derived values follow the keys they derive from (declared before them).
            (KeySource::ExporterInitSql, _) => super::monitoring::exporter_init_sql(
                data.get("password").map(String::as_str).unwrap_or(PLACEHOLDER),
            ),
        };
        data.insert((*key).to_string(), v);
    }
    let mut meta = metadata(clinic, generated.name.clone(), Component::Platform);
    // Velero restores Secrets with the namespace; keep them out of `kubectl apply --prune`.
    meta.annotations =
        Some(BTreeMap::from([("clinic.audioprothese.fr/generated".to_string(), "true".to_string())]));
    Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        string_data: Some(data),
        immutable: Some(false),
        ..Default::default()
    }
}

/// All generated Secrets of `clinic`.
pub fn build(clinic: &Clinic, values: &SecretValues) -> Vec<Secret> {
    generated(clinic).iter().map(|g| secret(clinic, g, *values)).collect()
}

/// A MariaDB key file holding one 256-bit key from the operating system's CSPRNG, as key 1
/// (the id InnoDB uses by default).
pub fn random_key_file() -> String {
    let mut key = [0u8; 32];
    OsRng.unwrap_err().fill_bytes(&mut key);
    let hex: String = key.iter().map(|b| format!("{b:02X}")).collect();
    format!("1;{hex}\n")
}

/// A password from the operating system's CSPRNG.
pub fn random_password() -> String {
    Alphanumeric.sample_string(&mut OsRng.unwrap_err(), PASSWORD_LENGTH)
}
