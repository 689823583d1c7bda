//! ClinicPlatforms that each break one rule of the CRD, generated from the CRD's own schema:
//! for every field of `spec` (embedded Kubernetes types included), its type, bounds, lengths,
//! item counts, enums, required fields, unknown fields, and each CEL rule. Each mutation has a
//! twin, the same document with a valid value in the field, so a refusal can be pinned on the
//! one rule the mutation breaks.
//!
//! Structural rules have one mutation each. A CEL rule is an expression, so it gets several
//! candidate values; the API server is the judge of which break it (its message is the rule's).

use serde_json::{Map, Value, json};

/// One step of a field path.
#[derive(Clone, Debug)]
enum Step {
    Field(String),
    /// The first item of a list.
    Item,
    /// An entry of a map (`additionalProperties`).
    Entry(String),
}

/// A document that breaks one rule, and its twin that does not.
#[derive(Clone, Debug)]
pub struct Mutation {
    /// Which rule, e.g. `spec.images.registry maxLength=253`.
    pub rule: String,
    /// The field both the API server and `render` must name.
    pub field: String,
    /// `metadata.name` of the broken document.
    pub name: String,
    /// `metadata.name` of the twin.
    pub twin_name: String,
    pub broken: Value,
    pub twin: Value,
    /// For a CEL rule, its message (the API server must say it for the candidate to count).
    pub cel_message: Option<String>,
}

/// Valid values for fields whose rules a generic sample does not meet (patterns written as
/// CEL, URL schemes). Keyed by the field path without indexes.
fn known_sample(path: &str) -> Option<Value> {
    Some(match path {
        "spec.openmrs.version" => json!("3.7.x"),
        "spec.openmrs.locale" => json!("fr"),
        "spec.openmrs.spaConfigUrls[]" => json!("https://config.example.org/config.json"),
        "spec.openmrs.backend.javaMemoryOpts" => json!("-Xmx2g"),
        "spec.openmrs.backend.clustering.elasticsearchUris" => json!("http://search:9200"),
        "spec.database.version" => json!("10.11"),
        "spec.monitoring.scrapeInterval" => json!("30s"),
        "spec.security.extraEgress[]" => json!({"cidr": "10.40.12.0/24", "port": 443}),
        "spec.residency.zones[]" => json!("fr-par-1"),
        "spec.route.host" => json!("emr.clinic.example.fr"),
        _ => return None,
    })
}

/// The spec of `examples/production.yaml`: valid values for most fields, as a team writes them.
pub fn production_spec() -> Value {
    let text =
        std::fs::read_to_string(clinic_operator_e2e::workspace_root().join("examples/production.yaml"))
            .unwrap_or_default();
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .find(|d: &Value| d["kind"] == "ClinicPlatform")
        .map(|d| d["spec"].clone())
        .unwrap_or(Value::Null)
}

struct Generator {
    /// The schema of `spec`, where every path starts.
    spec: Value,
    production: Value,
    out: Vec<Mutation>,
}

/// Every mutation of the CRD schema (`openAPIV3Schema`).
pub fn generate(crd_schema: &Value) -> Vec<Mutation> {
    let spec = crd_schema["properties"]["spec"].clone();
    let mut generator = Generator { spec: spec.clone(), production: production_spec(), out: Vec::new() };
    generator.walk(&spec, &[Step::Field("spec".into())]);
    generator.root_rules(crd_schema);
    generator.out
}

fn dotted(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Field(name) | Step::Entry(name) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            Step::Item => out.push_str("[0]"),
        }
    }
    out
}

/// The path with `[]` for any item: `spec.security.extraEgress[].cidr`.
fn without_indexes(path: &[Step]) -> String {
    dotted(path).replace("[0]", "[]")
}

fn type_of(schema: &Value) -> &str {
    if schema["x-kubernetes-int-or-string"] == true {
        return "int-or-string";
    }
    schema["type"].as_str().unwrap_or("")
}

fn is_struct(schema: &Value) -> bool {
    schema.get("properties").is_some()
        && schema.get("additionalProperties").is_none()
        && schema["x-kubernetes-preserve-unknown-fields"] != true
}

impl Generator {
    /// A valid value for the field at `path`.
    fn sample(&self, schema: &Value, path: &[Step]) -> Value {
        if let Some(value) = known_sample(&without_indexes(path)) {
            return value;
        }
        if let Some(value) = self.production_value(path) {
            return value;
        }
        if let Some(default) = schema.get("default") {
            return default.clone();
        }
        if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
            return first.clone();
        }
        match type_of(schema) {
            "object" => self.minimal(schema, path),
            "array" => {
                let item = self.sample(&schema["items"], &[path, &[Step::Item]].concat());
                json!([item])
            }
            "string" => json!("a"),
            "integer" | "number" => json!(schema["minimum"].as_i64().unwrap_or(1).max(1)),
            "boolean" => json!(true),
            "int-or-string" => json!("1"),
            _ => json!({}),
        }
    }

    fn production_value(&self, path: &[Step]) -> Option<Value> {
        let mut here = &self.production;
        for step in &path[1..] {
            here = match step {
                Step::Field(name) | Step::Entry(name) => here.get(name)?,
                Step::Item => here.get(0)?,
            };
        }
        Some(here.clone())
    }

    /// An object with its required fields only.
    fn minimal(&self, schema: &Value, path: &[Step]) -> Value {
        let mut object = Map::new();
        for name in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            let field = &schema["properties"][name];
            object.insert(name.into(), self.sample(field, &[path, &[Step::Field(name.into())]].concat()));
        }
        Value::Object(object)
    }

    /// The spec with `leaf` at `path` and, above it, the least a valid spec needs.
    fn spec_with(&self, spec_schema: &Value, path: &[Step], leaf: Value) -> Value {
        self.with(spec_schema, &path[..1], &path[1..], leaf)
    }

    fn with(&self, schema: &Value, here: &[Step], rest: &[Step], leaf: Value) -> Value {
        let Some((step, rest)) = rest.split_first() else { return leaf };
        let there = [here, std::slice::from_ref(step)].concat();
        match step {
            Step::Field(name) => {
                let mut object = self.minimal(schema, here);
                let Value::Object(fields) = &mut object else { return object };
                fields.insert(name.clone(), self.with(&schema["properties"][name], &there, rest, leaf));
                object
            }
            Step::Item => json!([self.with(&schema["items"], &there, rest, leaf)]),
            Step::Entry(key) => {
                json!({ key.clone(): self.with(&schema["additionalProperties"], &there, rest, leaf) })
            }
        }
    }

    fn push(&mut self, rule: String, field: String, broken: Value, twin: Value, cel_message: Option<String>) {
        let name = format!("m-{:04}", self.out.len());
        self.out.push(Mutation { rule, field, twin_name: name.clone(), name, broken, twin, cel_message });
    }

    fn walk(&mut self, schema: &Value, path: &[Step]) {
        let spec = self.spec.clone();
        let field = dotted(path);
        let twin = self.spec_with(&spec, path, self.sample(schema, path));
        let broken = |generator: &mut Self, rule: &str, value: Value| {
            let document = generator.spec_with(&spec, path, value);
            generator.push(format!("{field} {rule}"), field.clone(), document, twin.clone(), None);
        };

        let wrong_type = match type_of(schema) {
            "string" => Some(json!(42)),
            "integer" | "number" => Some(json!("12x")),
            "boolean" => Some(json!("yes")),
            "object" | "array" => Some(json!("x")),
            "int-or-string" => Some(json!(true)),
            _ => None,
        };
        if let Some(value) = wrong_type {
            broken(self, &format!("type={}", type_of(schema)), value);
        }
        if let Some(limit) = schema["maxLength"].as_u64() {
            broken(self, &format!("maxLength={limit}"), json!("a".repeat(limit as usize + 1)));
        }
        if let Some(limit) = schema["minLength"].as_u64().filter(|l| *l > 0) {
            broken(self, &format!("minLength={limit}"), json!("a".repeat(limit as usize - 1)));
        }
        if let Some(limit) = schema["maxItems"].as_u64() {
            let item = self.sample(&schema["items"], &[path, &[Step::Item]].concat());
            broken(self, &format!("maxItems={limit}"), Value::Array(vec![item; limit as usize + 1]));
        }
        if let Some(limit) = schema["minItems"].as_u64().filter(|l| *l > 0) {
            let item = self.sample(&schema["items"], &[path, &[Step::Item]].concat());
            broken(self, &format!("minItems={limit}"), Value::Array(vec![item; limit as usize - 1]));
        }
        if let Some(limit) = schema["maximum"].as_i64() {
            broken(self, &format!("maximum={limit}"), json!(limit + 1));
        }
        if let Some(limit) = schema["minimum"].as_i64() {
            broken(self, &format!("minimum={limit}"), json!(limit - 1));
        }
        if schema.get("enum").is_some() {
            broken(self, "enum", json!("NotOneOfThem"));
        }
        for required in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            let mut object = self.sample(schema, path);
            if let Value::Object(fields) = &mut object {
                fields.remove(required);
            }
            let document = self.spec_with(&spec, path, object);
            self.push(
                format!("{field} required={required}"),
                format!("{field}.{required}"),
                document,
                twin.clone(),
                None,
            );
        }
        if is_struct(schema) {
            let mut object = self.sample(schema, path);
            if let Value::Object(fields) = &mut object {
                fields.insert("notAField".into(), json!(1));
            }
            let document = self.spec_with(&spec, path, object);
            self.push(
                format!("{field} unknown field"),
                format!("{field}.notAField"),
                document,
                twin.clone(),
                None,
            );
        }
        for rule in schema["x-kubernetes-validations"].as_array().into_iter().flatten() {
            let message = rule["message"].as_str().unwrap_or_default().to_string();
            let expression = rule["rule"].as_str().unwrap_or_default();
            // A transition rule judges an update against the stored object: a created object
            // never breaks it (the scenarios that update a clinic prove those).
            if expression.contains("oldSelf") {
                continue;
            }
            for candidate in self.cel_candidates(schema, path) {
                let document = self.spec_with(&spec, path, candidate);
                self.push(
                    format!("{field} rule `{expression}`"),
                    field.clone(),
                    document,
                    twin.clone(),
                    Some(message.clone()),
                );
            }
        }

        for (name, child) in schema["properties"].as_object().into_iter().flatten() {
            self.walk(child, &[path, &[Step::Field(name.clone())]].concat());
        }
        if type_of(schema) == "array" {
            self.walk(&schema["items"], &[path, &[Step::Item]].concat());
        }
        if let Some(values) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            let key = self
                .production_value(path)
                .and_then(|v| v.as_object().and_then(|m| m.keys().next().cloned()))
                .unwrap_or_else(|| "cpu".into());
            self.walk(values, &[path, &[Step::Entry(key)]].concat());
        }
    }

    /// Values that may break a CEL rule on a field of this type; which do is the API server's
    /// call.
    fn cel_candidates(&self, schema: &Value, path: &[Step]) -> Vec<Value> {
        match type_of(schema) {
            "string" => [
                "",
                "a",
                "A",
                "-a-",
                "INVALID VALUE",
                "a/",
                "http://a",
                "a://b",
                "10x",
                "5Q",
                "x y",
                "@every 5x",
                "1.2.3.4/33",
                "fr_",
                "Xmx",
                "a.",
                "1",
                "0.0.0.0/0",
                "169.254.169.254/32",
                "app.kubernetes.io/instance",
                "https://x.example/\"><script>alert(1)</script>",
                "-XX:OnOutOfMemoryError=sh",
            ]
            .into_iter()
            .map(Value::from)
            .chain([json!("a".repeat(300))])
            .collect(),
            "integer" => [-1, 0, 2, 6, 11, 21, 51, 101, 65536].into_iter().map(Value::from).collect(),
            // A rule on a list of strings judges its items: each string candidate as the one item.
            "array" if type_of(&schema["items"]) == "string" => std::iter::once(json!([]))
                .chain(self.cel_candidates(&schema["items"], path).into_iter().map(|item| json!([item])))
                .collect(),
            "array" => vec![json!([])],
            "object" if schema.get("additionalProperties").is_some() => vec![
                json!({"k": "v".repeat(64)}),
                json!({"k".repeat(254): "v"}),
                json!({"app.kubernetes.io/instance": "other"}),
            ],
            "object" => {
                let mut candidates = vec![json!({})];
                let sample = self.sample(schema, path);
                let properties = schema["properties"].as_object().cloned().unwrap_or_default();
                // One field present alone, then every field present.
                for (name, child) in &properties {
                    let mut one = self.minimal(schema, path);
                    one[name] = self.sample(child, &[path, &[Step::Field(name.clone())]].concat());
                    candidates.push(one);
                }
                let mut all = sample.clone();
                for (name, child) in &properties {
                    if all.get(name).is_none() {
                        all[name] = self.sample(child, &[path, &[Step::Field(name.clone())]].concat());
                    }
                }
                candidates.push(all);
                // Integers in descending order (minimum above maximum), and all above one.
                let integers: Vec<&String> =
                    properties.iter().filter(|(_, c)| type_of(c) == "integer").map(|(n, _)| n).collect();
                if !integers.is_empty() {
                    let mut descending = sample.clone();
                    for (i, name) in integers.iter().enumerate() {
                        descending[name.as_str()] = json!(10 - i as i64 * 5);
                    }
                    candidates.push(descending);
                    let mut ascending = sample.clone();
                    for (i, name) in integers.iter().enumerate() {
                        ascending[name.as_str()] = json!(2 + i as i64 * 5);
                    }
                    candidates.push(ascending);
                    let mut above_one = self.minimal(schema, path);
                    for name in &integers {
                        above_one[name.as_str()] = json!(3);
                    }
                    candidates.push(above_one);
                }
                candidates
            }
            _ => Vec::new(),
        }
    }

    /// The CEL rules on the root (the object's name): broken by names.
    fn root_rules(&mut self, crd_schema: &Value) {
        for rule in crd_schema["x-kubernetes-validations"].as_array().into_iter().flatten() {
            let message = rule["message"].as_str().unwrap_or_default().to_string();
            let expression = rule["rule"].as_str().unwrap_or_default();
            for length in [41, 63] {
                let name = "n".repeat(length);
                self.out.push(Mutation {
                    rule: format!("<root> rule `{expression}`"),
                    field: "metadata.name".into(),
                    name,
                    twin_name: "n".repeat(40),
                    broken: json!({}),
                    twin: json!({}),
                    cel_message: Some(message.clone()),
                });
            }
        }
    }
}
