//! The clinic's namespace held to Pod Security `restricted`: its labels are part of the secure
//! state the operator keeps.

use std::collections::BTreeMap;

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::api::FIELD_MANAGER;
use crate::model::Clinic;
use crate::reconcile::context::Context;
use crate::reconcile::error::{Error, Result};

/// The Pod Security level the operator enforces on clinic namespaces.
pub const POD_SECURITY_LEVEL: &str = "restricted";

/// Labels that make the API server enforce, audit and warn Pod Security `restricted`.
pub fn pod_security_labels() -> BTreeMap<String, String> {
    ["enforce", "audit", "warn"]
        .into_iter()
        .map(|mode| (format!("pod-security.kubernetes.io/{mode}"), POD_SECURITY_LEVEL.to_string()))
        .collect()
}

/// Whether the namespace's labels enforce `restricted` (whoever set them).
pub fn enforces_restricted(labels: &BTreeMap<String, String>) -> bool {
    labels.get("pod-security.kubernetes.io/enforce").map(String::as_str) == Some(POD_SECURITY_LEVEL)
}

/// Nothing to add: the namespace carries the labels, or the clinic opted out, or the namespace
/// is not cached (namespaced mode: the operator cannot see namespaces).
pub fn pod_security_in_place(ctx: &Context, clinic: &Clinic) -> bool {
    let Some(labels) = ctx.caches.namespace_labels(&clinic.namespace) else {
        return true;
    };
    !clinic.spec.security.enforce_pod_security
        || pod_security_labels().iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Labels the clinic's namespace for Pod Security `restricted`. Labels are only ever added: a
/// clinic that opts out (when the platform's policy lets it) stops adding them but never
/// removes them, so two clinics of one namespace cannot undo each other, and lifting Pod
/// Security stays the platform team's act.
pub async fn ensure_pod_security(ctx: &Context, clinic: &Clinic) -> Result<()> {
    if pod_security_in_place(ctx, clinic) {
        return Ok(());
    }
    let body_labels = pod_security_labels();
    let patch = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": clinic.namespace, "labels": body_labels },
    });
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ctx.client.clone());
    ctx.metrics.record_write("apply");
    api.patch(&clinic.namespace, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|source| Error::Apply {
            kind: "Namespace".into(),
            name: clinic.namespace.clone(),
            source,
        })?;
    Ok(())
}
