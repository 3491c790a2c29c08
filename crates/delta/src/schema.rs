//! Table schemas in Delta's terms: dagrun's typed columns become a Delta `StructType`, and a new
//! load's schema is compared with the published one. Adding (nullable) columns evolves a table;
//! dropping, retyping or repartitioning breaks it, and is refused unless asked for.

use dagrun_core::storage::delta::DeltaColumn;
use deltalake_core::kernel::{Metadata, Protocol, StructType};
use serde_json::{Value, json};

/// The Delta schema of `columns`; every column is nullable, as Parquet readers expect.
pub(crate) fn struct_type(columns: &[DeltaColumn]) -> Result<StructType, String> {
    let fields: Vec<Value> =
        columns.iter().map(|c| json!({"name": c.name, "type": c.ty, "nullable": true, "metadata": {}})).collect();
    serde_json::from_value(json!({"type": "struct", "fields": fields}))
        .map_err(|e| format!("cannot describe the table's columns in Delta's types: {e}"))
}

/// How a new schema differs from the published one.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Change {
    /// Columns only the new schema has.
    pub added: Vec<String>,
    /// What breaks readers of the published table, in words.
    pub breaking: Vec<String>,
}

fn fields(schema: &StructType) -> Vec<(String, Value)> {
    let value = serde_json::to_value(schema).unwrap_or(Value::Null);
    value["fields"]
        .as_array()
        .map(|fields| {
            fields.iter().map(|f| (f["name"].as_str().unwrap_or_default().to_string(), f["type"].clone())).collect()
        })
        .unwrap_or_default()
}

fn type_name(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// Compares the published schema and partitioning with a new one.
pub(crate) fn compare(old: &StructType, new: &StructType, old_parts: &[String], new_parts: &[String]) -> Change {
    let old = fields(old);
    let new = fields(new);
    let mut change = Change::default();
    for (name, ty) in &old {
        match new.iter().find(|(n, _)| n == name) {
            None => change.breaking.push(format!("column `{name}` would be dropped")),
            Some((_, t)) if t != ty => {
                change.breaking.push(format!("column `{name}` would change from {} to {}", type_name(ty), type_name(t)))
            }
            Some(_) => {}
        }
    }
    for (name, _) in &new {
        if !old.iter().any(|(n, _)| n == name) {
            change.added.push(name.clone());
        }
    }
    if old_parts != new_parts {
        change.breaking.push(format!(
            "the partitioning would change from [{}] to [{}]",
            old_parts.join(", "),
            new_parts.join(", ")
        ));
    }
    change
}

/// `old` with a new schema, partitioning and the `properties` given, keeping the table's id, name
/// and other properties.
pub(crate) fn metadata(
    old: &Metadata,
    schema: &StructType,
    partition_by: &[String],
    properties: &[(&str, &str)],
) -> Result<Metadata, String> {
    let mut configuration = old.configuration().clone();
    for (k, v) in properties {
        configuration.insert(k.to_string(), v.to_string());
    }
    let value = json!({
        "id": old.id(),
        "name": old.name(),
        "description": old.description(),
        "format": { "provider": "parquet", "options": {} },
        "schemaString": serde_json::to_string(schema).map_err(|e| e.to_string())?,
        "partitionColumns": partition_by,
        "configuration": configuration,
        "createdTime": old.created_time(),
    });
    serde_json::from_value(value).map_err(|e| format!("cannot write the table's new metadata: {e}"))
}

/// The protocol and metadata of a new dagrun table: what delta-rs's `CreateBuilder` writes for
/// these columns and properties (reader 1, writer 2: the properties dagrun sets need no table
/// feature), built here so that the first commit can skip `CreateBuilder`'s two full reloads of
/// the log it just wrote.
pub(crate) fn new_table(
    schema: &StructType,
    name: &str,
    partition_by: &[String],
    properties: &[(&str, &str)],
) -> Result<(Protocol, Metadata), String> {
    let protocol = json!({ "minReaderVersion": 1, "minWriterVersion": 2 });
    let configuration: serde_json::Map<String, serde_json::Value> =
        properties.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let metadata = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "name": name,
        "description": null,
        "format": { "provider": "parquet", "options": {} },
        "schemaString": serde_json::to_string(schema).map_err(|e| e.to_string())?,
        "partitionColumns": partition_by,
        "configuration": configuration,
        "createdTime": chrono::Utc::now().timestamp_millis(),
    });
    let protocol = serde_json::from_value(protocol).map_err(|e| format!("cannot write the table's protocol: {e}"))?;
    let metadata = serde_json::from_value(metadata).map_err(|e| format!("cannot write the table's metadata: {e}"))?;
    Ok((protocol, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(c: &[(&str, &str)]) -> StructType {
        struct_type(&c.iter().map(|(n, t)| DeltaColumn { name: n.to_string(), ty: t.to_string() }).collect::<Vec<_>>())
            .unwrap()
    }

    #[test]
    fn added_columns_evolve_and_dropped_or_retyped_ones_break() {
        let old = cols(&[("a", "long"), ("b", "string")]);
        assert_eq!(compare(&old, &old, &[], &[]), Change::default());
        let added = compare(&old, &cols(&[("a", "long"), ("b", "string"), ("c", "double")]), &[], &[]);
        assert_eq!(added.added, vec!["c"]);
        assert!(added.breaking.is_empty());
        let broken = compare(&old, &cols(&[("a", "string")]), &["a".into()], &[]);
        assert_eq!(
            broken.breaking,
            vec![
                "column `a` would change from long to string",
                "column `b` would be dropped",
                "the partitioning would change from [a] to []"
            ]
        );
    }

    #[test]
    fn unknown_types_are_reported() {
        let e = struct_type(&[DeltaColumn { name: "x".into(), ty: "uint128".into() }]).unwrap_err();
        assert!(e.contains("Delta's types"), "{e}");
    }
}
