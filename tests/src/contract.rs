//! Validates stream entries against the schemas in `contracts/*.asyncapi.yaml`,
//! and REST answers against those of `contracts/rest-gateway.openapi.yaml`.
//!
//! A stream entry is flat string fields; the contract's wire-encoding rules
//! decide how each is decoded before validation: integer properties from
//! decimal strings, `details`/`payload` from JSON text, the rest as strings.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value};

pub struct Contract {
    document: Value,
}

impl Contract {
    /// Loads `contracts/<file>` from the workspace.
    pub fn load(file: &str) -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../contracts")
            .join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let document: Value =
            serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self { document }
    }

    fn schema(&self, name: &str) -> &Value {
        &self.document["components"]["schemas"][name]
    }

    /// Decodes flat fields into the JSON value the named schema describes.
    pub fn decode(&self, schema: &str, fields: &HashMap<String, String>) -> Value {
        let properties = &self.schema(schema)["properties"];
        let object = fields
            .iter()
            .map(|(k, v)| {
                let declared = &properties[k.as_str()];
                let value = if declared["type"] == "integer" {
                    v.parse::<i64>()
                        .map(Value::from)
                        .unwrap_or_else(|_| Value::String(v.clone()))
                } else if k == "details" || k == "payload" {
                    serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone()))
                } else {
                    Value::String(v.clone())
                };
                (k.clone(), value)
            })
            .collect();
        Value::Object(object)
    }

    /// Errors of `fields` against `schema`, empty when valid.
    pub fn errors(&self, schema: &str, fields: &HashMap<String, String>) -> Vec<String> {
        self.json_errors(schema, &self.decode(schema, fields))
    }

    /// Errors of a JSON value (a REST answer) against `schema`, empty when
    /// valid. The OpenAPI 3.1 schemas are JSON Schema 2020-12.
    pub fn json_errors(&self, schema: &str, instance: &Value) -> Vec<String> {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": format!("#/components/schemas/{schema}"),
            "components": self.document["components"].clone(),
        });
        let validator = jsonschema::validator_for(&root).expect("contract schema compiles");
        validator
            .iter_errors(instance)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect()
    }

    /// Panics with every error when `instance` does not match `schema`.
    pub fn assert_json_valid(&self, schema: &str, instance: &Value) {
        let errors = self.json_errors(schema, instance);
        assert!(
            errors.is_empty(),
            "{schema} {instance:#} violates the contract: {errors:#?}"
        );
    }

    /// The document itself (e.g. a schema's `example`).
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// Panics with every error when `fields` does not match `schema`.
    pub fn assert_valid(&self, schema: &str, fields: &HashMap<String, String>) {
        let errors = self.errors(schema, fields);
        assert!(
            errors.is_empty(),
            "{schema} entry {fields:?} violates the contract: {errors:#?}"
        );
    }
}
