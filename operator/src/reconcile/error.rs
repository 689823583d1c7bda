//! Errors of one reconcile. Each has a small, fixed `reason()`: it becomes the Warning event's
//! reason and the `reason` label of the error metric, so it must stay bounded.

use crate::model::InvalidSpec;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is wrong: the user must fix it; nothing was applied.
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] InvalidSpec),

    /// A server-side apply of a child was refused.
    #[error("applying {kind} {name}: {source}")]
    Apply { kind: String, name: String, source: kube::Error },

    /// A child that is no longer wanted could not be deleted.
    #[error("deleting {kind} {name}: {source}")]
    Prune { kind: String, name: String, source: kube::Error },

    /// A generated Secret could not be created.
    #[error("creating Secret {name}: {source}")]
    CreateSecret { name: String, source: kube::Error },

    /// A generated credentials Secret is gone while the data it protects still exists:
    /// generating a new one would lock OpenMRS out of its database.
    #[error(
        "Secret {secret} is missing but volume claim {claim} holds data initialised with it; restore the Secret (e.g. from a Velero backup) - a new password would not open the existing database"
    )]
    CredentialsLost { secret: String, claim: String },

    /// Reading the cluster failed.
    #[error("reading {what}: {source}")]
    Read { what: String, source: kube::Error },

    /// Writing the ClinicPlatform status failed.
    #[error("updating status: {0}")]
    Status(#[source] kube::Error),

    /// An object could not be (de)serialised.
    #[error("serialising {what}: {source}")]
    Serialize { what: String, source: serde_json::Error },
}

impl Error {
    /// Bounded CamelCase reason for events, conditions and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::Apply { .. } => "ApplyFailed",
            Error::Prune { .. } => "PruneFailed",
            Error::CreateSecret { .. } => "SecretCreateFailed",
            Error::CredentialsLost { .. } => "CredentialsLost",
            Error::Read { .. } => "ReadFailed",
            Error::Status(_) => "StatusUpdateFailed",
            Error::Serialize { .. } => "SerializationFailed",
        }
    }

    /// Whether the user must act (no point retrying fast).
    pub fn is_user_error(&self) -> bool {
        matches!(self, Error::InvalidSpec(_) | Error::CredentialsLost { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
