//! The structural half of what the API server checks before it stores a ClinicPlatform, done
//! offline so that `render` gives the same verdict as `kubectl apply`: types, bounds, lengths,
//! item counts, enums, required fields (of embedded Kubernetes types too) and unknown fields, as
//! strict field validation (`kubectl apply`'s default) refuses them. The CEL rules are the other
//! half ([`crate::model::validate`]).
//!
//! The check is the CRD's own `openAPIV3Schema`, translated once into JSON Schema and run by the
//! `jsonschema` crate: one source of truth with what `crds/` installs, no rule written twice.

use std::sync::LazyLock;

use kube::CustomResourceExt;
use serde_json::{Map, Value};

use super::ClinicPlatform;

/// One field the API server would refuse, in its words: the path (`spec.images.registry`,
/// `spec.tolerations[0].key`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Path of the offending field, as the API server writes it.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// The CRD's `openAPIV3Schema`, generated once per process.
static OPENAPI_SCHEMA: LazyLock<Option<Value>> = LazyLock::new(|| {
    let crd = ClinicPlatform::crd();
    let schema = crd.spec.versions.first()?.schema.as_ref()?.open_api_v3_schema.as_ref()?;
    serde_json::to_value(schema).ok()
});

/// The CRD's structural schema as a JSON Schema validator, built once per process.
static VALIDATOR: LazyLock<Option<jsonschema::Validator>> = LazyLock::new(|| {
    let mut schema = json_schema(OPENAPI_SCHEMA.as_ref()?);
    // Every kind has these at its root; the API server checks `metadata` itself (the name
    // rules are CEL here) and the CRD's schema does not list them.
    if let Some(Value::Object(root)) = schema.get_mut("properties") {
        root.insert("apiVersion".into(), serde_json::json!({"type": "string"}));
        root.insert("kind".into(), serde_json::json!({"type": "string"}));
        root.insert("metadata".into(), serde_json::json!({"type": "object"}));
    }
    // Formats are not checked: the API server ignores the ones this schema carries
    // (int32, int64 on integers; date-time only in status).
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(false)
        .build(&schema)
        .ok()
});

/// The CRD's `openAPIV3Schema`, as JSON Schema (what the API server's validator runs).
pub fn openapi_schema() -> Option<Value> {
    OPENAPI_SCHEMA.clone()
}

/// Every structural error of a ClinicPlatform document (`apiVersion`, `kind`, `metadata`,
/// `spec`), the way the API server reports them; empty when the schema accepts it. Like the API
/// server, a `null` in a field that is not nullable counts as absent.
pub fn check(document: &Value) -> Vec<FieldError> {
    let Some(validator) = VALIDATOR.as_ref() else {
        // The schema is generated from our own types: it compiles or no test passes.
        return Vec::new();
    };
    let mut document = document.clone();
    if let Some(schema) = OPENAPI_SCHEMA.as_ref() {
        prune_nulls(&mut document, schema);
    }
    let mut errors: Vec<FieldError> =
        validator.iter_errors(&document).flat_map(|error| field_errors(&error)).collect();
    errors.sort_by(|a, b| a.field.cmp(&b.field));
    errors.dedup();
    errors
}

/// Translates a Kubernetes structural schema into JSON Schema 2020-12.
///
/// - `nullable: true` adds `null` to the type;
/// - `x-kubernetes-int-or-string` is an integer or a string;
/// - an object with `properties`, neither a map (`additionalProperties`) nor
///   `x-kubernetes-preserve-unknown-fields`, refuses other fields: strict field validation;
/// - CEL rules, descriptions and defaults are dropped (CEL runs apart; defaults only fill
///   what is absent, and are valid by construction).
fn json_schema(node: &Value) -> Value {
    let Some(object) = node.as_object() else { return node.clone() };
    let mut out = Map::new();
    for (key, value) in object {
        match key.as_str() {
            "properties" => {
                let properties = value
                    .as_object()
                    .map(|p| p.iter().map(|(k, v)| (k.clone(), json_schema(v))).collect())
                    .unwrap_or_default();
                out.insert(key.clone(), Value::Object(properties));
            }
            "items" | "additionalProperties" | "not" => {
                out.insert(key.clone(), json_schema(value));
            }
            "anyOf" | "allOf" | "oneOf" => {
                let branches =
                    value.as_array().map(|b| b.iter().map(json_schema).collect()).unwrap_or_default();
                out.insert(key.clone(), Value::Array(branches));
            }
            "type" | "required" | "enum" | "maxLength" | "minLength" | "maxItems" | "minItems"
            | "maximum" | "minimum" | "exclusiveMaximum" | "exclusiveMinimum" | "pattern" | "format"
            | "maxProperties" | "minProperties" | "multipleOf" | "uniqueItems" => {
                out.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    let nullable = object.get("nullable").and_then(Value::as_bool).unwrap_or(false);
    if object.get("x-kubernetes-int-or-string").and_then(Value::as_bool).unwrap_or(false) {
        out.insert("type".into(), serde_json::json!(["integer", "string"]));
    }
    if nullable {
        let types = match out.remove("type") {
            Some(Value::String(single)) => vec![Value::String(single), "null".into()],
            Some(Value::Array(mut several)) => {
                several.push("null".into());
                several
            }
            _ => Vec::new(),
        };
        if !types.is_empty() {
            out.insert("type".into(), Value::Array(types));
        }
        // `enum` lists the allowed strings; a null is allowed too.
        if let Some(Value::Array(values)) = out.get_mut("enum") {
            values.push(Value::Null);
        }
    }
    let keeps_unknown =
        object.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool).unwrap_or(false);
    if object.contains_key("properties") && !object.contains_key("additionalProperties") && !keeps_unknown {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    Value::Object(out)
}

/// Drops `null` values of fields that are not nullable, as the API server does before it
/// defaults and validates (a default then fills the field).
fn prune_nulls(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(fields) => {
            let nullable = |schema: &Value| schema.get("nullable").and_then(Value::as_bool).unwrap_or(false);
            fields.retain(|name, field| {
                let field_schema = schema
                    .get("properties")
                    .and_then(|p| p.get(name))
                    .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
                !(field.is_null() && field_schema.is_some_and(|s| !nullable(s)))
            });
            for (name, field) in fields.iter_mut() {
                let field_schema = schema
                    .get("properties")
                    .and_then(|p| p.get(name))
                    .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
                if let Some(field_schema) = field_schema {
                    prune_nulls(field, field_schema);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    prune_nulls(item, item_schema);
                }
            }
        }
        _ => {}
    }
}

/// A JSON pointer (`/spec/tolerations/0/key`) as the API server names the field
/// (`spec.tolerations[0].key`).
fn field_path(location: &jsonschema::paths::Location) -> String {
    let mut path = String::new();
    for segment in location.segments() {
        match segment {
            jsonschema::paths::LocationSegment::Property(name) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&name);
            }
            jsonschema::paths::LocationSegment::Index(index) => path.push_str(&format!("[{index}]")),
        }
    }
    if path.is_empty() { "<root>".to_string() } else { path }
}

fn join(parent: &str, child: &str) -> String {
    if parent == "<root>" { child.to_string() } else { format!("{parent}.{child}") }
}

/// One validator error in the API server's words (k8s.io/apimachinery field errors).
fn field_errors(error: &jsonschema::ValidationError<'_>) -> Vec<FieldError> {
    use jsonschema::error::ValidationErrorKind as Kind;
    let field = field_path(error.instance_path());
    let instance = error.instance();
    let one = |message: String| vec![FieldError { field: field.clone(), message }];
    match error.kind() {
        Kind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|name| {
                let path = join(&field, name);
                FieldError { message: format!("unknown field \"{path}\""), field: path }
            })
            .collect(),
        Kind::Required { property } => {
            let name = property.as_str().map(str::to_string).unwrap_or_else(|| property.to_string());
            vec![FieldError { field: join(&field, &name), message: "Required value".into() }]
        }
        Kind::Type { kind } => one(format!(
            "Invalid value: {}: must be of type {}",
            json_type(instance),
            match kind {
                jsonschema::error::TypeKind::Single(t) => t.to_string(),
                jsonschema::error::TypeKind::Multiple(ts) => ts
                    .iter()
                    .filter(|t| t.to_string() != "null")
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
            }
        )),
        Kind::MaxLength { limit } => one(format!("Too long: may not be more than {limit} characters")),
        Kind::MinLength { limit } => {
            one(format!("Invalid value: {instance}: must be at least {limit} characters long"))
        }
        Kind::MaxItems { limit } => one(format!(
            "Too many: {}: must have at most {limit} items",
            instance.as_array().map_or(0, Vec::len)
        )),
        Kind::MinItems { limit } => one(format!("Invalid value: must have at least {limit} items")),
        Kind::Maximum { limit } => {
            one(format!("Invalid value: {instance}: must be less than or equal to {limit}"))
        }
        Kind::Minimum { limit } => {
            one(format!("Invalid value: {instance}: must be greater than or equal to {limit}"))
        }
        Kind::Enum { options } => one(format!(
            "Unsupported value: {instance}: supported values: {}",
            options
                .as_array()
                .map(|values| values
                    .iter()
                    .filter(|v| !v.is_null())
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        )),
        Kind::Pattern { pattern } => one(format!("Invalid value: {instance}: must match {pattern:?}")),
        _ => one(format!("Invalid value: {error}")),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn clinic(spec: Value) -> Value {
        json!({
            "apiVersion": "clinic.audioprothese.fr/v1alpha1",
            "kind": "ClinicPlatform",
            "metadata": {"name": "lyon", "namespace": "clinic-lyon"},
            "spec": spec,
        })
    }

    #[test]
    fn the_empty_spec_is_valid() {
        assert_eq!(check(&clinic(json!({}))), vec![]);
    }

    #[test]
    fn an_unknown_field_is_named_as_strict_validation_names_it() {
        let errors = check(&clinic(json!({"openmrs": {"replicas": 3}})));
        assert_eq!(
            errors,
            vec![FieldError {
                field: "spec.openmrs.replicas".into(),
                message: "unknown field \"spec.openmrs.replicas\"".into()
            }]
        );
    }

    #[test]
    fn a_too_long_string_names_its_field_and_the_limit() {
        let errors = check(&clinic(json!({"images": {"registry": "r".repeat(300)}})));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "spec.images.registry");
        assert!(errors[0].message.starts_with("Too long: may not be more than"), "{errors:?}");
    }

    #[test]
    fn required_fields_of_embedded_kubernetes_types_are_checked() {
        let errors = check(&clinic(
            json!({"openmrs": {"backend": {"placement": {"topologySpreadConstraints": [{}]}}}}),
        ));
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert!(
            fields.contains(&"spec.openmrs.backend.placement.topologySpreadConstraints[0].maxSkew")
                && fields
                    .contains(&"spec.openmrs.backend.placement.topologySpreadConstraints[0].topologyKey"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_null_in_a_field_that_is_not_nullable_counts_as_absent() {
        assert_eq!(check(&clinic(json!({"images": null}))), vec![]);
    }

    #[test]
    fn a_wrong_type_names_the_expected_one() {
        let errors = check(&clinic(json!({"openmrs": {"locale": 12}})));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "spec.openmrs.locale");
        assert!(errors[0].message.contains("must be of type string"), "{errors:?}");
    }
}
