//! Generation of the CRD definitions and their YAML, used by `crdgen`, by `dreampipe-operator
//! crds` and by the tests.
//!
//! schemars writes what Rust knows, and two of those things read wrongly on an API server, so
//! every definition passes through [`for_the_api_server`]:
//! - unsigned integers carry formats (`uint8`, `uint32`, `uint64`) that Kubernetes does not
//!   know and warns about at `kubectl apply`; they become `int32`/`int64` (their `minimum: 0`
//!   stays);
//! - a `///` comment wrapped over several lines reaches the description with a hard line break
//!   in the middle of a sentence, which `kubectl explain` prints as it is; lines of a paragraph
//!   are joined, blank-line paragraph breaks and list items kept.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crate::{Adapter, Entity, Erasure, Projection};

/// The formats an API server's structural schemas recognise (apiextensions-apiserver's
/// `supportedFormats`); any other makes `kubectl apply` warn.
pub const KUBERNETES_FORMATS: &[&str] = &[
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
    "date-time",
    "int32",
    "int64",
    "float",
    "double",
];

/// The four definitions, as the API server should receive them.
pub fn definitions() -> [CustomResourceDefinition; 4] {
    [
        Entity::crd(),
        Adapter::crd(),
        Projection::crd(),
        Erasure::crd(),
    ]
    .map(for_the_api_server)
}

/// Each CRD's file name under `crds/yaml/` and its YAML.
pub fn crd_files() -> Vec<(&'static str, String)> {
    let header = "# Generated from the Rust types in crds/src by `cargo run -p crds --bin crdgen`.\n\
                  # Do not edit by hand.\n";
    definitions()
        .into_iter()
        .map(|crd| {
            let file = match crd.spec.names.kind.as_str() {
                "Entity" => "entities.dreampipe.io.yaml",
                "Adapter" => "adapters.dreampipe.io.yaml",
                "Erasure" => "erasures.dreampipe.io.yaml",
                _ => "projections.dreampipe.io.yaml",
            };
            let yaml = serde_yaml::to_string(&crd).expect("a CRD always serialises to YAML");
            (file, format!("{header}{yaml}"))
        })
        .collect()
}

/// `crd` with Kubernetes' integer formats and paragraph-shaped descriptions.
pub fn for_the_api_server(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let mut value = serde_json::to_value(&crd).expect("a CRD serialises to JSON");
    for version in value["spec"]["versions"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        if let Some(schema) = version.pointer_mut("/schema/openAPIV3Schema") {
            fix_schema(schema);
        }
    }
    serde_json::from_value(value).expect("the fixed CRD is still a CRD")
}

/// `schema` and every schema nested in it (properties, items, additional properties, the
/// `allOf`/`anyOf`/`oneOf` branches) fixed in place.
fn fix_schema(schema: &mut Value) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::String(format)) = object.get_mut("format")
        && let Some(known) = kubernetes_integer_format(format)
    {
        *format = known.to_owned();
    }
    if let Some(Value::String(description)) = object.get_mut("description") {
        *description = as_paragraphs(description);
    }
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        properties.values_mut().for_each(fix_schema);
    }
    for keyword in ["items", "additionalProperties", "not"] {
        match object.get_mut(keyword) {
            Some(Value::Array(schemas)) => schemas.iter_mut().for_each(fix_schema),
            Some(nested) => fix_schema(nested),
            None => {}
        }
    }
    for keyword in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(schemas)) = object.get_mut(keyword) {
            schemas.iter_mut().for_each(fix_schema);
        }
    }
}

/// The Kubernetes format for an unsigned one, which no API server knows.
fn kubernetes_integer_format(format: &str) -> Option<&'static str> {
    match format {
        "uint8" | "uint16" | "int8" | "int16" => Some("int32"),
        "uint32" | "uint64" | "uint" => Some("int64"),
        _ => None,
    }
}

/// `text` with each paragraph on one line: a line break inside a paragraph becomes a space,
/// blank lines between paragraphs stay, and a list item (`- `, `* `, `1. `) starts its own line.
pub fn as_paragraphs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (n, paragraph) in text.split("\n\n").enumerate() {
        if n > 0 {
            out.push_str("\n\n");
        }
        let mut first = true;
        for line in paragraph.lines().map(str::trim) {
            if line.is_empty() {
                continue;
            }
            if !first {
                out.push(if starts_list_item(line) { '\n' } else { ' ' });
            }
            out.push_str(line);
            first = false;
        }
    }
    out
}

fn starts_list_item(line: &str) -> bool {
    line.starts_with("- ")
        || line.starts_with("* ")
        || line
            .split_once(". ")
            .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_lines_of_a_paragraph_are_joined() {
        assert_eq!(
            as_paragraphs("The number of ordering\npartitions; immutable."),
            "The number of ordering partitions; immutable."
        );
    }

    #[test]
    fn paragraph_breaks_and_list_items_are_kept() {
        assert_eq!(
            as_paragraphs("One of:\n- a\n- b\n\nSecond\nparagraph."),
            "One of:\n- a\n- b\n\nSecond paragraph."
        );
    }

    #[test]
    fn unsigned_formats_become_kubernetes_ones() {
        assert_eq!(kubernetes_integer_format("uint8"), Some("int32"));
        assert_eq!(kubernetes_integer_format("uint64"), Some("int64"));
        assert_eq!(kubernetes_integer_format("int32"), None);
    }
}
