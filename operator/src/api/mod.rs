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
