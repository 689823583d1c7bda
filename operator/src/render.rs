//! `clinic-operator render` and `clinic-operator crd`: the operator's output with no cluster.

use kube::CustomResourceExt;
use serde::Deserialize;

use crate::api::ClinicPlatform;
use crate::api::schema::{self, FieldError};
use crate::desired::{self, SecretValues};
use crate::model::{self, InvalidSpec};
use crate::policy::Policy;

/// Why a file could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("document {index}: not valid YAML: {source}")]
    Parse { index: usize, source: serde_yaml::Error },
    #[error("document {index}: {field}: {message}")]
    Field { index: usize, field: String, message: String },
    #[error("document {index} ({name}): {source}")]
    Invalid { index: usize, name: String, source: InvalidSpec },
    /// What the operator would refuse under the platform's policy.
    #[error("document {index} ({name}): the platform's policy does not allow {source}")]
    NotAllowed { index: usize, name: String, source: InvalidSpec },
    /// What the API server's structural schema check would refuse: every field at once, as
    /// `kubectl apply` lists them.
    #[error("document {index} ({name}) is refused by the ClinicPlatform schema:{}", bullets(.errors))]
    Schema { index: usize, name: String, errors: Vec<FieldError> },
    #[error(
        "document {index}: kind {kind:?} is not a ClinicPlatform (apiVersion clinic.audioprothese.fr/v1alpha1)"
    )]
    WrongKind { index: usize, kind: String },
    #[error("cannot write YAML: {0}")]
    Serialize(#[from] serde_yaml::Error),
}

fn bullets(errors: &[FieldError]) -> String {
    errors.iter().map(|e| format!("\n  - {e}")).collect()
}

/// The CRD as YAML (what `crds/clinicplatform.yaml` holds).
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&ClinicPlatform::crd())
}

/// Renders every object the operator would apply for the ClinicPlatforms in `input`
/// (multi-document YAML) under the default policy. Objects without a namespace are rendered into
/// `default_namespace`. Nothing is returned unless every document is valid.
pub fn render(input: &str, default_namespace: &str) -> Result<String, RenderError> {
    render_with(input, default_namespace, &Policy::default())
}

/// [`render`] under the platform's policy: what the operator would refuse is refused here too.
pub fn render_with(input: &str, default_namespace: &str, policy: &Policy) -> Result<String, RenderError> {
    let mut clinics = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(input).enumerate() {
        let index = index + 1;
        let value = serde_json::Value::deserialize(document)
            .map_err(|source| RenderError::Parse { index, source })?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_string();
        let api_version = value.get("apiVersion").and_then(|k| k.as_str()).unwrap_or_default();
        if kind == "Namespace" && api_version == "v1" {
            // Examples and GitOps trees ship the clinic's namespace beside it: not ours to render.
            continue;
        }
        if kind != "ClinicPlatform" || api_version != "clinic.audioprothese.fr/v1alpha1" {
            return Err(RenderError::WrongKind { index, kind });
        }
        let errors = schema::check(&value);
        if !errors.is_empty() {
            let name = value["metadata"]["name"].as_str().unwrap_or_default().to_string();
            return Err(RenderError::Schema { index, name, errors });
        }
        // The path names the field a platform team must fix (`spec.deletionPolicy`).
        let mut cp: ClinicPlatform = serde_path_to_error::deserialize(value).map_err(|e| {
            RenderError::Field { index, field: e.path().to_string(), message: e.inner().to_string() }
        })?;
        if cp.metadata.namespace.is_none() {
            cp.metadata.namespace = Some(default_namespace.to_string());
        }
        let name = cp.metadata.name.clone().unwrap_or_default();
        let broken_rules: Vec<FieldError> = model::cel_errors(&cp)
            .into_iter()
            .map(|e| FieldError { field: e.field, message: e.message })
            .collect();
        if !broken_rules.is_empty() {
            return Err(RenderError::Schema { index, name, errors: broken_rules });
        }
        let clinic = model::validate_beyond_cel(&cp).map_err(|source| RenderError::Invalid {
            index,
            name: name.clone(),
            source,
        })?;
        let clinic =
            policy.admit(clinic).map_err(|source| RenderError::NotAllowed { index, name, source })?;
        clinics.push(clinic);
    }
    let mut out = String::new();
    for clinic in &clinics {
        for object in desired::objects(clinic, &SecretValues::Placeholder) {
            out.push_str("---\n");
            out.push_str(&yaml_for_kubectl(&object)?);
        }
        // Objects outside the clinic's namespace (the Velero Schedule, a dashboard in
        // Grafana's namespace) are written by their own path, not among the owned children; a
        // reviewer still wants to see them.
        for object in desired::outside(clinic) {
            out.push_str("---\n");
            out.push_str(&yaml_for_kubectl(&object)?);
        }
    }
    Ok(out)
}

/// Words YAML 1.1 reads as booleans, which serde_yaml (YAML 1.2) leaves unquoted.
const YAML11_BOOLEANS: &[&str] =
    &["y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF"];

/// `object` as YAML that YAML 1.1 parsers read back the same: kubectl, Helm and kubeconform
/// (go-yaml) turn a plain `Off` into `false`, so the VerticalPodAutoscaler's `updateMode: Off`
/// would be refused. Plain scalars that are such words are quoted; block scalars (`|`) are
/// left as they are.
fn yaml_for_kubectl<T: serde::Serialize>(object: &T) -> Result<String, serde_yaml::Error> {
    let yaml = serde_yaml::to_string(object)?;
    let mut out = String::with_capacity(yaml.len() + 16);
    let mut block_parent: Option<usize> = None;
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(parent) = block_parent {
            if line.trim().is_empty() || indent > parent {
                out.push_str(line);
                out.push('\n');
                continue;
            }
            block_parent = None;
        }
        let value_at = line
            .rfind(": ")
            .map(|i| i + 2)
            .or_else(|| line.trim_start().starts_with("- ").then_some(indent + 2));
        match value_at {
            Some(at) if YAML11_BOOLEANS.contains(&&line[at..]) => {
                out.push_str(&line[..at]);
                out.push('\'');
                out.push_str(&line[at..]);
                out.push('\'');
            }
            _ => out.push_str(line),
        }
        out.push('\n');
        let trimmed = line.trim_end();
        if ["|", "|-", "|+", ">", ">-", ">+"].iter().any(|b| trimmed.ends_with(&format!(" {b}"))) {
            block_parent = Some(indent);
        }
    }
    Ok(out)
}

/// The ClinicPlatform field reference (`docs/api.md`), generated from the CRD schema so it cannot
/// drift from what `kubectl explain` says.
pub fn api_reference() -> String {
    let crd = ClinicPlatform::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .map(|s| serde_json::to_value(s).unwrap_or_default())
        .unwrap_or_default();
    let mut out = String::from(
        "# ClinicPlatform reference\n\n\
         `clinic.audioprothese.fr/v1alpha1`, kind `ClinicPlatform` (namespaced, short name `clinic`).\n\
         Generated from the CRD schema by `make docs`; a test fails when it drifts.\n\n\
         | field | type | default | description |\n|---|---|---|---|\n",
    );
    fields("spec", &schema["properties"]["spec"], &mut out);
    out.push_str("\n## Status\n\n| field | type | description |\n|---|---|---|\n");
    let mut status = String::new();
    fields("status", &schema["properties"]["status"], &mut status);
    for line in status.lines() {
        // Drop the default column: status has none.
        let cells: Vec<&str> = line.split(" | ").collect();
        if cells.len() == 4 {
            out.push_str(&format!("{} | {} | {}\n", cells[0], cells[1], cells[3]));
        }
    }
    out
}

fn fields(path: &str, node: &serde_json::Value, out: &mut String) {
    let Some(props) = node.get("properties").and_then(|p| p.as_object()) else { return };
    for (name, field) in props {
        let here = format!("{path}.{name}");
        let mut kind = field["type"].as_str().unwrap_or("int-or-string").to_string();
        if kind == "array" {
            kind = format!("[]{}", field["items"]["type"].as_str().unwrap_or("object"));
        }
        let default = match &field["default"] {
            serde_json::Value::Null => String::new(),
            serde_json::Value::Object(_) => String::new(),
            v => format!("`{v}`"),
        };
        let mut description =
            field["description"].as_str().unwrap_or("").replace('\n', " ").replace('|', "\\|");
        if let Some(values) = field["enum"].as_array() {
            let values: Vec<String> =
                values.iter().map(|v| format!("`{}`", v.as_str().unwrap_or(""))).collect();
            description.push_str(&format!(" One of {}.", values.join(", ")));
        }
        for rule in field["x-kubernetes-validations"].as_array().into_iter().flatten() {
            if let Some(message) = rule["message"].as_str() {
                description
                    .push_str(&format!(" Rule: {}.", message.replace('|', "\\|").trim_end_matches('.')));
            }
        }
        out.push_str(&format!("| `{here}` | {kind} | {default} | {description} |\n"));
        // Kubernetes types (resources, tolerations...) are documented upstream; stop there.
        let upstream = ["resources", "tolerations", "topologySpreadConstraints", "nodeSelector"]
            .contains(&name.as_str());
        if !upstream {
            fields(&here, field, out);
            if field["type"] == "array" {
                fields(&format!("{here}[]"), &field["items"], out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::yaml_for_kubectl;
    use serde_json::json;

    #[test]
    fn yaml_11_booleans_are_quoted_and_block_scalars_kept() {
        let object = json!({
            "spec": {"updatePolicy": {"updateMode": "Off"}, "list": ["yes", "On", "other"], "truth": true},
            "data": {"nginx.conf": "sendfile on;\nkey: off\n- no\n", "plain": "offline"},
        });
        let yaml = yaml_for_kubectl(&object).unwrap();
        assert!(yaml.contains("updateMode: 'Off'"), "{yaml}");
        assert!(yaml.contains("- 'yes'") && yaml.contains("- 'On'") && yaml.contains("- other"), "{yaml}");
        assert!(yaml.contains("truth: true") && yaml.contains("plain: offline"), "{yaml}");
        // The block scalar's lines are its content: untouched.
        assert!(yaml.contains("    key: off\n") && yaml.contains("    - no\n"), "{yaml}");
        let back: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, object);
    }
}
