//! Errors of one reconcile. Each has a small, fixed `reason()`: it becomes the Warning event's
//! reason and the `reason` label of the error metric, so it must stay bounded.

use crate::model::InvalidSpec;

/// Messages are sentences for the person reading `kubectl describe`: what failed, on which
/// object, why (the API server's own words, never a `Debug` dump), and what happens next.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is wrong: the user must fix it; nothing was applied.
    #[error("the spec is invalid: {0}. Nothing was applied; fix the field and apply again.")]
    InvalidSpec(#[from] InvalidSpec),

    /// The spec asks for something the platform team's policy does not allow: the tenant
    /// changes the field or the platform team the policy; nothing was applied.
    #[error(
        "the platform's policy does not allow {0}. Nothing was applied; fix the field and apply again, or ask the platform team."
    )]
    NotAllowed(InvalidSpec),

    /// The spec asks for a replicated database and the mariadb-operator's API is not served:
    /// nothing was applied (a single MariaDB in its place would be an availability the clinic
    /// did not ask for, and its data could not move to the replicated one later).
    #[error(
        "spec.database.highAvailability asks for a replicated MariaDB, but this cluster does not serve the mariadb-operator's API (k8s.mariadb.com/v1alpha1 MariaDB). Nothing was applied; the platform team installs the mariadb-operator, and the clinic is looked at again with backoff."
    )]
    DatabaseOperatorMissing,

    /// A server-side apply was refused (a child, an object outside the caches, the namespace's
    /// Pod Security labels).
    #[error("could not apply {kind} {name}: {}. The operator retries with backoff.", Cause(source))]
    Apply { kind: String, name: String, source: kube::Error },

    /// A JSON merge patch was refused: a child's lists replaced after server-side apply left
    /// another manager's entries, a generated Secret's labels and owners, a Backup's expiration.
    #[error("could not patch {kind} {name}: {}. The operator retries with backoff.", Cause(source))]
    Patch { kind: String, name: String, source: kube::Error },

    /// An object made once (the pre-upgrade Backup) could not be created.
    #[error("could not create {kind} {name}: {}. The operator retries with backoff.", Cause(source))]
    Create { kind: String, name: String, source: kube::Error },

    /// The clean-up finalizer could not be added to or removed from the ClinicPlatform.
    #[error(
        "could not update the finalizer of ClinicPlatform {name}: {}. The operator retries with backoff.",
        Cause(source)
    )]
    Finalizer { name: String, source: kube::Error },

    /// A child that is no longer wanted could not be deleted.
    #[error(
        "could not delete {kind} {name}, which the spec no longer wants: {}. The operator retries with backoff.",
        Cause(source)
    )]
    Prune { kind: String, name: String, source: kube::Error },

    /// A generated Secret could not be created.
    #[error(
        "could not create the generated Secret {name}: {}. The operator retries with backoff.",
        Cause(source)
    )]
    CreateSecret { name: String, source: kube::Error },

    /// A generated credentials Secret is gone while the data it protects still exists:
    /// generating a new one would lock OpenMRS out of its database.
    #[error(
        "Secret {secret} is missing but volume claim {claim} holds data initialised with it. Restore the Secret (e.g. from a Velero backup): a new password would not match the one the existing data was initialised with."
    )]
    CredentialsLost { secret: String, claim: String },

    /// The Secret with the keys the data was encrypted with is gone while the data exists:
    /// new keys would not decrypt it.
    #[error(
        "Secret {secret} is missing but volume claim {claim} holds data encrypted with its keys. Restore the Secret (e.g. from a Velero backup, or the copy kept apart from the data): new keys would not decrypt the data, so none were generated."
    )]
    EncryptionKeyLost { secret: String, claim: String },

    /// The database credentials now come from another Secret than the one the running database
    /// was initialised with: MariaDB keeps its own copy of the passwords, so the new Secret
    /// would lock OpenMRS out of its data.
    #[error(
        "the database was initialised with the passwords of Secret {from}, but the spec now takes them from {to} (spec.database.credentialsSecretRef): MariaDB keeps its own copy, so nothing was changed. Set it back to {from}; or, once {to} holds the passwords the database knows (or they were changed in MariaDB to match), annotate {annotation}={to}",
        annotation = crate::api::CREDENTIALS_MOVED_ANNOTATION
    )]
    CredentialsSwitch { from: String, to: String },

    /// An object outside the clinic's namespace has the name the clinic needs but is not the
    /// clinic's: it is left as it is.
    #[error(
        "{object} already exists and belongs to {}, not to this clinic: the operator neither changes nor deletes it. Remove or rename it, or ask the platform team who made it.",
        holder.as_deref().map(|h| format!("clinic {h}")).unwrap_or_else(|| "something the operator did not make".into())
    )]
    NameClash { object: String, holder: Option<String> },

    /// MariaDB's certificate could not be issued with the clinic's CA.
    #[error(
        "could not issue MariaDB's certificate (Secret {secret}): {source}. The operator retries with backoff; if the CA Secret {ca} was edited, delete it and a new CA is made."
    )]
    Certificate { secret: String, ca: String, source: crate::desired::internal_tls::CertificateError },

    /// A certificate Secret the operator issues could not be written.
    #[error("could not write Secret {name}: {}. The operator retries with backoff.", Cause(source))]
    WriteCertificate { name: String, source: kube::Error },

    /// A StatefulSet could not be deleted to be made again (its governing Service moved).
    #[error("could not replace {kind} {name}: {}. The operator retries with backoff.", Cause(source))]
    Replace { kind: String, name: String, source: kube::Error },

    /// Reading the cluster failed.
    #[error("could not read {what}: {}. The operator retries with backoff.", Cause(source))]
    Read { what: String, source: kube::Error },

    /// Writing the ClinicPlatform status failed.
    #[error("could not update the ClinicPlatform's status: {}. The operator retries with backoff.", Cause(.0))]
    Status(#[source] kube::Error),

    /// An object could not be (de)serialised.
    #[error("could not serialise {what}: {source}. This is a bug in the operator: please report it.")]
    Serialize { what: String, source: serde_json::Error },
}

/// A `kube::Error` in words: the API server's message and status code (kube's own `Display`
/// appends a `Debug` dump of the whole Status), with a hint for the codes a person can act on.
pub struct Cause<'a>(pub &'a kube::Error);

impl std::fmt::Display for Cause<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            kube::Error::Api(status) => {
                let message = if status.message.is_empty() { "no message" } else { status.message.as_str() };
                write!(f, "{message} (HTTP {}", status.code)?;
                if !status.reason.is_empty() {
                    write!(f, " {}", status.reason)?;
                }
                f.write_str(")")?;
                match status.code {
                    403 => f.write_str(
                        " - the operator's RBAC does not allow it; compare its ClusterRole and Roles with the chart's",
                    ),
                    404 if message.starts_with("namespaces ") => {
                        f.write_str(" - the namespace does not exist")
                    }
                    _ => Ok(()),
                }
            }
            kube::Error::HyperError(e) => write!(f, "the API server could not be reached ({e})"),
            kube::Error::Service(e) => write!(f, "the API server could not be reached ({e})"),
            other => write!(f, "{other}"),
        }
    }
}

impl Error {
    /// Bounded CamelCase reason for events, conditions and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::NotAllowed(_) => "NotAllowed",
            Error::DatabaseOperatorMissing => "DatabaseOperatorMissing",
            Error::Apply { .. } => "ApplyFailed",
            Error::Patch { .. } => "PatchFailed",
            Error::Create { .. } => "CreateFailed",
            Error::Finalizer { .. } => "FinalizerUpdateFailed",
            Error::Prune { .. } => "PruneFailed",
            Error::CreateSecret { .. } => "SecretCreateFailed",
            Error::CredentialsLost { .. } => "CredentialsLost",
            Error::EncryptionKeyLost { .. } => "EncryptionKeyLost",
            Error::CredentialsSwitch { .. } => "CredentialsSwitch",
            Error::NameClash { .. } => "NameClash",
            Error::Certificate { .. } => "CertificateFailed",
            Error::WriteCertificate { .. } => "CertificateWriteFailed",
            Error::Replace { .. } => "ReplaceFailed",
            Error::Read { .. } => "ReadFailed",
            Error::Status(_) => "StatusUpdateFailed",
            Error::Serialize { .. } => "SerializationFailed",
        }
    }

    /// Whether the user must act (no point retrying fast).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::InvalidSpec(_)
                | Error::NotAllowed(_)
                | Error::CredentialsLost { .. }
                | Error::EncryptionKeyLost { .. }
                | Error::CredentialsSwitch { .. }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error kept for a condition (its reason and message), where the error itself cannot be
/// kept (it is not `Clone`) or should not stop the pass (optional children, objects outside the
/// namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

impl From<&Error> for Problem {
    fn from(error: &Error) -> Self {
        Self { reason: error.reason(), message: error.to_string() }
    }
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        Self::from(&error)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
