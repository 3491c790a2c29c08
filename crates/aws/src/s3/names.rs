//! The names dagrun gives files on S3: a run's tagged data files and how to know them again.

/// Whether `relative` (inside a table) is a data file as dagrun names them in its hive folders:
/// `year=2018/part-00000-<run>-<process>-<attempt>.parquet`.
pub(super) fn dagrun_named(relative: &str) -> bool {
    let (dirs, name) = relative.rsplit_once('/').unwrap_or(("", relative));
    dagrun_core::storage::delta::parse_data_file(name).is_some()
        && (dirs.is_empty() || dirs.split('/').all(|d| d.split_once('=').is_some_and(|(k, _)| !k.is_empty())))
}

/// `part-00000.parquet` -> `part-00000-<tag>.parquet`: the name a tagged file has on S3.
pub(crate) fn tagged_name(relative: &str, tag: &str) -> String {
    let (dir, file) = relative.rsplit_once('/').map_or(("", relative), |(d, f)| (d, f));
    let tagged = match file.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}-{tag}.{ext}"),
        None => format!("{file}-{tag}"),
    };
    if dir.is_empty() { tagged } else { format!("{dir}/{tagged}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_dagrun_names_in_hive_folders_are_dagruns() {
        assert!(dagrun_named("year=2018/part-00000-r1-abcd1234-1.parquet"));
        assert!(dagrun_named("part-00003-r1-abcd1234-2.parquet"));
        assert!(!dagrun_named("exports/2018/part-00000-1c2d3e4f-c000.snappy.parquet"));
        assert!(!dagrun_named("year=2018/notes.parquet"));
        assert!(!dagrun_named("exports/part-00000-r1-abcd1234-1.parquet"));
    }

    #[test]
    fn tagged_names_keep_folders_and_extensions() {
        assert_eq!(tagged_name("year=2018/part-00000.parquet", "r1-1"), "year=2018/part-00000-r1-1.parquet");
        assert_eq!(tagged_name("part-00000.parquet", "r1-1"), "part-00000-r1-1.parquet");
    }
}
