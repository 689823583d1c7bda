//! The `ClinicPlatform` API (`clinic.audioprothese.fr/v1alpha1`).
//!
//! Doc comments on fields become `kubectl explain` text; CEL rules
//! (`x-kubernetes-validations`) carry messages that name the field and what is allowed. The same
//! rules are evaluated offline by `validate` (so `render` rejects what the API server would).

pub mod schema;
mod spec;
mod status;

pub use spec::*;
pub use status::*;

/// API group of every kind this operator serves.
pub const GROUP: &str = "clinic.audioprothese.fr";
/// Field manager used for every server-side apply.
pub const FIELD_MANAGER: &str = "clinic-operator";
/// Finalizer that guards clean-up of children outside the clinic namespace.
pub const FINALIZER: &str = "clinic.audioprothese.fr/cleanup";
/// Annotation that arms `deletionPolicy: Delete`: its value must be the ClinicPlatform's own
/// `metadata.uid`. A uid exists only once the object does, so no manifest in a Git repository
/// (and no copy of one for another clinic) can carry the confirmation: destroying data always
/// takes a deliberate step on the live object.
pub const CONFIRM_DELETION_ANNOTATION: &str = "clinic.audioprothese.fr/confirm-deletion";
/// Annotation (value `true`) on a ClinicPlatform being deleted whose clean-up keeps failing: the
/// finalizer is released without it, and what was left outside the namespace is named in a
/// Warning event (the platform team removes it by hand).
pub const ABANDON_CLEANUP_ANNOTATION: &str = "clinic.audioprothese.fr/abandon-cleanup";
/// Annotation naming the Secret the database credentials moved to, once a person has made it
/// hold the passwords the database knows: without it, a `credentialsSecretRef` pointing away from
/// the Secret an initialised database was set up with is refused (`CredentialsSwitch`).
pub const CREDENTIALS_MOVED_ANNOTATION: &str = "clinic.audioprothese.fr/database-credentials-moved-to";
