//! Hive's partition folder names, which Spark, Polars, DuckDB and pyarrow read: a value escaped
//! the way Hive does (`/` becomes `%2F`, and so on), so that no value can name a folder outside
//! its table, and null or empty values in `__HIVE_DEFAULT_PARTITION__`. Written by every load,
//! undone by every reader of a published table.

/// The folder name Hive, Spark and Polars use for a null (or empty) partition value.
pub(crate) const DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";
/// File systems refuse longer names.
/// Escapes one partition value the way Hive's `FileUtils.escapePathName` does. A literal value
/// spelled like the default partition gets its first `_` escaped, so that readers unescape it back
/// to the text it was instead of reading it as null.
pub(crate) fn escape_partition_value(value: &str) -> String {
    if value.is_empty() {
        return DEFAULT_PARTITION.to_string();
    }
    if value == DEFAULT_PARTITION {
        return format!("%5F{}", &DEFAULT_PARTITION[1..]);
    }
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        let escape = matches!(
            c,
            '\u{01}'
                ..='\u{1F}'
                    | '"'
                    | '#'
                    | '%'
                    | '\''
                    | '*'
                    | '/'
                    | ':'
                    | '='
                    | '?'
                    | '\\'
                    | '\u{7F}'
                    | '{'
                    | '['
                    | ']'
                    | '^'
        ) || c == '\0';
        if escape {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Undoes [`escape_partition_value`].
pub(crate) fn unescape_partition_value(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or(""), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_values_round_trip() {
        for v in ["AR/../x", "a=b:c%", "Café Zürich", "..", "100%"] {
            assert_eq!(unescape_partition_value(&escape_partition_value(v)), v);
        }
    }
}
